package archive

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the compression of a layer stream, detected by its magic.
type Compression int

const (
	// Uncompressed is a plain tar (or anything without a known magic).
	Uncompressed Compression = iota
	// Gzip is RFC 1952 gzip, possibly multi-member.
	Gzip
	// Zstd is a zstd stream, possibly starting with skippable frames.
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	default:
		return "uncompressed"
	}
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	// bzip2BlockMagic follows the level digit: without it a plain tar whose
	// first name starts with "BZh" would be refused.
	bzip2BlockMagic = []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}
)

// DetectCompression names the compression whose magic starts b.
func DetectCompression(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, magicGzip):
		return Gzip
	case bytes.HasPrefix(b, magicZstd):
		return Zstd
	case len(b) >= 4 && b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18:
		// A zstd skippable frame (magic 0x184D2A5?, little endian).
		return Zstd
	}
	return Uncompressed
}

// readBufferSize is how much of the compressed (or plain) input is read at a
// time.
const readBufferSize = 256 << 10

// Decompress returns the decompressed stream of r, choosing gzip, zstd or
// none by the magic bytes at its start. xz and bzip2 are recognised and
// refused with errdefs.ErrNotImplemented, as containerd does without
// external helpers. Closing the result releases the decompressor, never r.
//
// A gzip stream of at least igzipMinSize (when r tells its size, as an
// io.SectionReader does) is inflated by ISA-L's igzip when it is
// installed, and in process when igzip cannot be started: see igzip.
// Either way, gzip members follow one another until one is followed by
// anything but a gzip header, which ends the stream as igzip and unpigz
// treat it (containerd's in-process reader refuses such a layer; the
// layer's own digest covers those bytes).
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, readBufferSize)
	magic, err := br.Peek(10)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, fmt.Errorf("read layer magic: %w", err)
	}
	switch DetectCompression(magic) {
	case Gzip:
		if sz, ok := r.(interface{ Size() int64 }); ok && sz.Size() >= igzipMinSize {
			if path := igzipPath(); path != "" {
				z, err := startIgzip(path, br)
				if err == nil {
					return z, nil
				}
				// nothing has read br yet
				igzipFailed.Do(func() {
					log.L.WithError(err).Warn("igzip could not be started; inflating gzip layers in process")
				})
			}
		}
		return newGunzip(br)
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	switch {
	case bytes.HasPrefix(magic, magicXz):
		return nil, fmt.Errorf("xz compressed layer: %w", errdefs.ErrNotImplemented)
	case bytes.HasPrefix(magic, magicBzip2) && len(magic) == 10 && bytes.Equal(magic[4:], bzip2BlockMagic):
		return nil, fmt.Errorf("bzip2 compressed layer: %w", errdefs.ErrNotImplemented)
	}
	return io.NopCloser(br), nil
}

// gunzip inflates gzip members one after another in process, and ends
// the stream at the first one followed by anything but a gzip header.
type gunzip struct {
	br *bufio.Reader
	zr *gzip.Reader
}

func newGunzip(br *bufio.Reader) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	zr.Multistream(false)
	return &gunzip{br: br, zr: zr}, nil
}

func (g *gunzip) Read(p []byte) (int, error) {
	for {
		n, err := g.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		// the end of a member: another one, or the end of the stream
		if next, _ := g.br.Peek(len(magicGzip)); !bytes.Equal(next, magicGzip) {
			return n, io.EOF
		}
		if err := g.zr.Reset(g.br); err != nil {
			return n, fmt.Errorf("gzip layer: next member: %w", err)
		}
		g.zr.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
}

func (g *gunzip) Close() error { return g.zr.Close() }
