package local

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/labels"
)

// bufSize is the size of the buffers a Writer hands to its file goroutine:
// clients send small chunks (32 KiB from io.Copy, less from some gRPC
// clients); the file sees fewer, larger writes.
const bufSize = 256 << 10

// queueDepth is how many full buffers may wait for the file goroutine
// before Write blocks: enough to ride out a slow write(2), little memory.
const queueDepth = 8

// kickSize is how much written data may wait before its writeback to disk
// is started (sync_file_range, which neither waits nor makes anything
// durable): the disk then works while the rest arrives, and the one fsync
// at commit has less left to do.
const kickSize = 4 << 20

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, bufSize)
	return &b
}}

func (s *Store) lock(ref string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.locked[ref]; ok {
		return false
	}
	s.locked[ref] = struct{}{}
	return true
}

func (s *Store) unlock(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.locked, ref)
}

// Writer implements content.Ingester.
func (s *Store) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Ref == "" {
		return nil, fmt.Errorf("ref must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if wo.Desc.Size < 0 {
		return nil, fmt.Errorf("ingest %q: negative size %d: %w", wo.Ref, wo.Desc.Size, errdefs.ErrInvalidArgument)
	}
	if wo.Desc.Digest != "" {
		p, err := s.blobPath(wo.Desc.Digest)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("content %s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
		}
	}
	if !s.lock(wo.Ref) {
		return nil, fmt.Errorf("ref %q is locked: %w", wo.Ref, errdefs.ErrUnavailable)
	}
	w, err := s.open(wo.Ref, wo.Desc)
	if err != nil {
		s.unlock(wo.Ref)
		return nil, err
	}
	return w, nil
}

// open resumes the ingest of ref, or starts it when it is absent or was
// left incomplete. The caller holds the ref.
func (s *Store) open(ref string, desc ocispec.Descriptor) (*writer, error) {
	dir := s.ingestDir(ref)
	st, err := readStatus(dir)
	switch {
	case err == nil && st.Ref != ref:
		return nil, fmt.Errorf("ingest %q: directory %s holds ref %q", ref, dir, st.Ref)
	case err == nil:
		return s.resume(dir, st, desc)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, errCorrupt):
		if err := os.RemoveAll(dir); err != nil {
			return nil, ingestErr(ref, err)
		}
		return s.create(dir, ref, desc)
	default:
		return nil, ingestErr(ref, err)
	}
}

func (s *Store) create(dir, ref string, desc ocispec.Descriptor) (*writer, error) {
	now := time.Now()
	ts, err := now.MarshalText()
	if err != nil {
		return nil, err
	}
	type file struct{ name, data string }
	files := []file{{"ref", ref}, {"startedat", string(ts)}, {"updatedat", string(ts)}}
	if desc.Size > 0 {
		files = append(files, file{"total", strconv.FormatInt(desc.Size, 10)})
	}
	if desc.Digest != "" {
		files = append(files, file{"expected", desc.Digest.String()})
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, ingestErr(ref, err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), 0o600); err != nil {
			return nil, ingestErr(ref, err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, ingestErr(ref, err)
	}
	st := content.Status{Ref: ref, Total: desc.Size, Expected: desc.Digest, StartedAt: now, UpdatedAt: now}
	return s.newWriter(dir, f, st, sha256.New()), nil
}

func (s *Store) resume(dir string, st content.Status, desc ocispec.Descriptor) (*writer, error) {
	ref := st.Ref
	if desc.Size > 0 && st.Total > 0 && desc.Size != st.Total {
		return nil, fmt.Errorf("ingest %q: size %d differs from %d given before: %w", ref, desc.Size, st.Total, errdefs.ErrFailedPrecondition)
	}
	if desc.Size > 0 && st.Total == 0 {
		if err := os.WriteFile(filepath.Join(dir, "total"), []byte(strconv.FormatInt(desc.Size, 10)), 0o600); err != nil {
			return nil, ingestErr(ref, err)
		}
		st.Total = desc.Size
	}
	if desc.Digest != "" && desc.Digest != st.Expected {
		if err := os.WriteFile(filepath.Join(dir, "expected"), []byte(desc.Digest), 0o600); err != nil {
			return nil, ingestErr(ref, err)
		}
		st.Expected = desc.Digest
	}
	data := filepath.Join(dir, "data")
	// A commit that failed after making the data read-only leaves it so.
	if err := os.Chmod(data, 0o600); err != nil {
		return nil, ingestErr(ref, err)
	}
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		return nil, ingestErr(ref, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f) // leaves the offset at the end of the data
	if err != nil {
		f.Close()
		return nil, ingestErr(ref, err)
	}
	st.Offset = n
	return s.newWriter(dir, f, st, h), nil
}

func (s *Store) newWriter(dir string, f *os.File, st content.Status, h hash.Hash) *writer {
	w := &writer{s: s, dir: dir, f: f, h: h, cur: bufPool.Get().(*[]byte), st: st}
	w.fw.written, w.fw.kicked = st.Offset, st.Offset
	return w
}

// writer appends to the data file of one ingest. Write hashes the bytes
// and gathers them in cur; a full cur goes to a goroutine that writes it to
// the file while the caller goes on, so that a client waiting for each
// write's digest (Content.Write) waits for the hash only, and the file
// write overlaps with the next message. Commit waits for the file goroutine
// before it syncs; only Commit fsyncs. A file error is sticky: the next
// Write, Truncate or Commit returns it. The writer is not safe for
// concurrent use.
type writer struct {
	s     *Store
	dir   string
	f     *os.File // nil once closed or committed
	h     hash.Hash
	cur   *[]byte // hashed, not yet handed to the file goroutine
	queue chan *[]byte
	fw    fileWriter
	st    content.Status
	done  bool
}

// fileWriter is the file goroutine's state. written and kicked belong to
// the goroutine while buffers are in flight.
type fileWriter struct {
	pending sync.WaitGroup // buffers queued and not yet written
	mu      sync.Mutex
	err     error
	written int64 // bytes in the file
	kicked  int64 // bytes whose writeback was started
}

func (fw *fileWriter) error() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.err
}

func (w *writer) closedErr() error {
	return fmt.Errorf("ingest %q: writer is closed: %w", w.st.Ref, errdefs.ErrFailedPrecondition)
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, w.closedErr()
	}
	if err := w.fw.error(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		b := *w.cur
		k := copy(b[len(b):cap(b)], p)
		w.h.Write(b[len(b) : len(b)+k]) // just copied, so in cache
		*w.cur = b[:len(b)+k]
		p = p[k:]
		if len(*w.cur) == cap(*w.cur) {
			w.submit()
		}
	}
	w.st.Offset += int64(n)
	w.st.UpdatedAt = time.Now()
	return n, nil
}

// submit hands cur to the file goroutine, starting it if needed.
func (w *writer) submit() {
	if len(*w.cur) == 0 {
		return
	}
	if w.queue == nil {
		w.queue = make(chan *[]byte, queueDepth)
		go w.fileLoop(w.f, w.queue)
	}
	w.fw.pending.Add(1)
	w.queue <- w.cur
	w.cur = bufPool.Get().(*[]byte)
}

func (w *writer) fileLoop(f *os.File, queue <-chan *[]byte) {
	fw := &w.fw
	for b := range queue {
		if fw.error() == nil {
			n, err := f.Write(*b)
			fw.written += int64(n)
			if err != nil {
				fw.mu.Lock()
				fw.err = ingestErr(w.st.Ref, err)
				fw.mu.Unlock()
			} else if fw.written-fw.kicked >= kickSize {
				_ = unix.SyncFileRange(int(f.Fd()), fw.kicked, fw.written-fw.kicked, unix.SYNC_FILE_RANGE_WRITE)
				fw.kicked = fw.written
			}
		}
		*b = (*b)[:0]
		bufPool.Put(b)
		fw.pending.Done()
	}
}

// flush hands cur to the file goroutine and waits until everything
// written so far is in the file.
func (w *writer) flush() error {
	w.submit()
	w.fw.pending.Wait()
	return w.fw.error()
}

func (w *writer) Digest() digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, w.h.Sum(nil))
}

func (w *writer) Status() (content.Status, error) {
	if w.done {
		return content.Status{}, w.closedErr()
	}
	return w.st, nil
}

func (w *writer) Truncate(size int64) error {
	if w.done {
		return w.closedErr()
	}
	if size != 0 {
		return fmt.Errorf("ingest %q: truncate to %d: only 0 is supported: %w", w.st.Ref, size, errdefs.ErrInvalidArgument)
	}
	*w.cur = (*w.cur)[:0]
	w.fw.pending.Wait()
	fail := func(err error) error {
		// the hash and offset no longer describe the file: stay broken.
		w.fw.mu.Lock()
		w.fw.err = ingestErr(w.st.Ref, err)
		w.fw.mu.Unlock()
		return w.fw.error()
	}
	if err := w.f.Truncate(0); err != nil {
		return fail(err)
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	w.h.Reset()
	w.fw.mu.Lock()
	w.fw.err = nil
	w.fw.mu.Unlock()
	w.fw.written, w.fw.kicked = 0, 0
	w.st.Offset = 0
	w.st.UpdatedAt = time.Now()
	return nil
}

// Close writes the buffered data (without fsync: an ingest is durable only
// once committed), stops the file goroutine and releases the ref.
func (w *writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	defer w.s.unlock(w.st.Ref)
	var err error
	if w.f != nil {
		err = w.flush()
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = ingestErr(w.st.Ref, cerr)
		}
		w.f = nil
	}
	w.fw.pending.Wait()
	if w.queue != nil {
		close(w.queue)
		w.queue = nil
	}
	*w.cur = (*w.cur)[:0]
	bufPool.Put(w.cur)
	w.cur = nil
	return err
}

// Commit verifies the data and moves it under blobs/: fsync of the data,
// rename, fsync of the directory. When expected is empty, the digest given
// to Writer (if any) is checked instead. A mismatch keeps the ingest, so
// that it can be resumed, truncated or aborted.
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if w.done {
		return w.closedErr()
	}
	defer w.Close()
	ref := w.st.Ref
	var base content.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return err
		}
	}
	if err := labels.ValidateAll(base.Labels); err != nil {
		return fmt.Errorf("ingest %q: %w", ref, err)
	}
	if expected == "" {
		expected = w.st.Expected
	} else if err := content.ValidateDigest(expected); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if size > 0 && size != w.st.Offset {
		return fmt.Errorf("ingest %q: commit size %d, but %d bytes were written: %w", ref, size, w.st.Offset, errdefs.ErrFailedPrecondition)
	}
	dgst := w.Digest()
	if expected != "" && expected != dgst {
		return fmt.Errorf("ingest %q: commit digest %s, but the data written is %s: %w", ref, expected, dgst, errdefs.ErrFailedPrecondition)
	}
	target := filepath.Join(w.s.blobDir(), dgst.Encoded())
	if _, err := os.Lstat(target); err == nil {
		if err := os.RemoveAll(w.dir); err != nil {
			log.G(ctx).WithError(err).WithField("ref", ref).Warn("removing ingest of existing content")
		}
		return fmt.Errorf("content %s: %w", dgst, errdefs.ErrAlreadyExists)
	}

	data := filepath.Join(w.dir, "data")
	f := w.f
	w.f = nil
	now := time.Now()
	err := f.Chmod(0o444)
	if err == nil {
		err = os.Chtimes(data, now, now) // CreatedAt and UpdatedAt
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(data, target)
	}
	if err != nil {
		_ = os.Chmod(data, 0o600)
		return ingestErr(ref, err)
	}
	if err := syncDir(w.s.blobDir()); err != nil {
		return fmt.Errorf("content %s: %w", dgst, err)
	}
	if err := os.RemoveAll(w.dir); err != nil {
		// The blob is in place; a leftover directory without data is
		// discarded when the ref is opened again.
		log.G(ctx).WithError(err).WithField("ref", ref).Warn("removing committed ingest")
	}
	if base.Labels != nil && w.s.labels != nil {
		w.s.lmu.Lock()
		defer w.s.lmu.Unlock()
		if err := w.s.labels.Set(dgst, base.Labels); err != nil {
			return fmt.Errorf("content %s: labels: %w", dgst, err)
		}
	}
	return nil
}
