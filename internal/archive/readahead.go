package archive

import (
	"crypto/sha256"
	"hash"
	"io"
	"sync"

	digest "github.com/opencontainers/go-digest"
)

const (
	chunkSize   = 256 << 10
	chunkCount  = 8
	copyBufSize = 1 << 20
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// readahead reads the decompressed stream and hashes it in its own
// goroutine, ahead of the consumer that parses the tar and makes syscalls,
// so that the two halves of an apply run in parallel. Memory is bounded by chunkCount
// chunks. The producer owns src and closes it when it stops.
type readahead struct {
	full chan []byte
	free chan *[]byte
	done chan struct{}
	stop sync.Once
	exit chan struct{}

	// Written by the producer, read after exit is closed.
	h    hash.Hash
	size int64
	err  error

	// Consumer side.
	cur  *[]byte
	data []byte
}

func newReadahead(src io.ReadCloser) *readahead {
	ra := &readahead{
		full: make(chan []byte, chunkCount),
		free: make(chan *[]byte, chunkCount),
		done: make(chan struct{}),
		exit: make(chan struct{}),
		h:    sha256.New(),
	}
	for i := 0; i < chunkCount; i++ {
		ra.free <- chunkPool.Get().(*[]byte)
	}
	go ra.produce(src)
	return ra
}

func (ra *readahead) produce(src io.ReadCloser) {
	defer close(ra.exit)
	defer src.Close()
	for {
		var buf *[]byte
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := fill(src, *buf)
		if n > 0 {
			ra.h.Write((*buf)[:n])
			ra.size += int64(n)
			select {
			case ra.full <- (*buf)[:n]:
			case <-ra.done:
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				ra.err = err
			}
			close(ra.full)
			return
		}
	}
}

// Read implements io.Reader for the consumer.
func (ra *readahead) Read(p []byte) (int, error) {
	for len(ra.data) == 0 {
		if ra.cur != nil {
			ra.free <- ra.cur
			ra.cur = nil
		}
		b, ok := <-ra.full
		if !ok {
			<-ra.exit
			if ra.err != nil {
				return 0, ra.err
			}
			return 0, io.EOF
		}
		ra.data = b
		ra.cur = bufFor(b)
	}
	n := copy(p, ra.data)
	ra.data = ra.data[n:]
	return n, nil
}

// bufFor recovers the pooled buffer of a chunk.
func bufFor(b []byte) *[]byte {
	full := b[:cap(b)]
	return &full
}

// Close stops the producer and waits for it, so that src is no longer read
// once Close returns.
func (ra *readahead) Close() {
	ra.stop.Do(func() {
		close(ra.done)
		<-ra.exit
		// The producer is gone: recycle the chunks it left behind.
		if ra.cur != nil {
			chunkPool.Put(ra.cur)
			ra.cur, ra.data = nil, nil
		}
		for {
			select {
			case b := <-ra.free:
				chunkPool.Put(b)
				continue
			case b, ok := <-ra.full:
				if ok {
					chunkPool.Put(bufFor(b))
					continue
				}
			default:
			}
			break
		}
	})
}

// Digest returns the digest and size of everything produced; valid only
// after the consumer saw EOF.
func (ra *readahead) Digest() (digest.Digest, int64) {
	<-ra.exit
	return digest.NewDigestFromBytes(digest.SHA256, ra.h.Sum(nil)), ra.size
}

// fill reads into b until it is full or src fails. Unlike io.ReadFull it
// returns src's error as it is: io.EOF only at the stream's clean end, so
// that a decompressor's io.ErrUnexpectedEOF (a truncated layer) stays an
// error.
func fill(src io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := src.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
