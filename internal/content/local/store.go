// Package local is the content store on a local filesystem.
//
// Layout under the root directory:
//
//	blobs/sha256/<hex>          committed blobs, mode 0444, never modified
//	ingest/<sha256 of ref>/     one directory per ingest
//	    ref                     the ref, as given
//	    data                    the bytes written so far
//	    startedat, updatedat    times, as time.Time text
//	    total                   expected size, when known
//	    expected                expected digest, when known
//
// Invariants:
//
//   - A file under blobs/ has exactly the size and sha256 digest its name
//     says: it is fsync'd before an atomic rename puts it there, and the
//     directory is fsync'd after. A crash leaves a blob whole or absent.
//   - No path is built from a client string: digests are validated
//     (content.ValidateDigest) first, and refs are hashed into the name of
//     their ingest directory, so no ref can name a path outside the root.
//   - A ref is held by at most one Writer of a Store at a time. Two Stores
//     on one root do not see each other's locks: a root belongs to one Store.
//   - An ingest directory that lacks a file or holds a malformed one (a crash
//     while it was being created) is discarded when its ref is opened again.
//   - Ingests are not durable until committed: a Writer buffers, hashes in
//     the background and fsyncs once, in Commit. Store.Status of a ref with
//     an open Writer counts the bytes that reached the file; the Writer's
//     own Status counts all it accepted.
//
// Labels are not kept on disk here: a LabelStore given with WithLabelStore
// keeps them, and without one Info has no labels and Update fails with
// errdefs.ErrNotImplemented. CreatedAt is the blob's modification time and
// UpdatedAt its access time, both set explicitly; readers open blobs with
// O_NOATIME where permitted so that reading does not move UpdatedAt.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/labels"
)

// LabelStore keeps the labels of blobs for a Store. It must be safe for
// concurrent use.
type LabelStore interface {
	// Get returns the labels of dgst, nil when it has none.
	Get(dgst digest.Digest) (map[string]string, error)
	// Set replaces the labels of dgst; an empty map removes them all.
	Set(dgst digest.Digest, labels map[string]string) error
}

// Option configures a Store.
type Option func(*Store)

// WithLabelStore keeps labels in ls.
func WithLabelStore(ls LabelStore) Option {
	return func(s *Store) { s.labels = ls }
}

// Store is a content.Store on disk.
type Store struct {
	root   string
	labels LabelStore

	mu     sync.Mutex          // guards locked
	locked map[string]struct{} // refs held by an open Writer
	lmu    sync.Mutex          // serialises label read-modify-write
}

var _ content.Store = (*Store)(nil)

// New opens (creating if needed) the store under root.
func New(root string, opts ...Option) (*Store, error) {
	s := &Store{root: root, locked: map[string]struct{}{}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{s.blobDir(), s.ingestRoot()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("content store %s: %w", root, err)
		}
	}
	return s, nil
}

func (s *Store) blobDir() string    { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) ingestRoot() string { return filepath.Join(s.root, "ingest") }

// blobPath validates dgst and returns where its blob lives.
func (s *Store) blobPath(dgst digest.Digest) (string, error) {
	if err := content.ValidateDigest(dgst); err != nil {
		return "", err
	}
	return filepath.Join(s.blobDir(), dgst.Encoded()), nil
}

// ingestDir names the directory of ref by its hash, never by the ref.
func (s *Store) ingestDir(ref string) string {
	h := sha256.Sum256([]byte(ref))
	return filepath.Join(s.ingestRoot(), hex.EncodeToString(h[:]))
}

// Info implements content.Manager.
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	p, err := s.blobPath(dgst)
	if err != nil {
		return content.Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return content.Info{}, blobErr(dgst, err)
	}
	return s.info(dgst, fi)
}

func (s *Store) info(dgst digest.Digest, fi fs.FileInfo) (content.Info, error) {
	info := content.Info{
		Digest:    dgst,
		Size:      fi.Size(),
		CreatedAt: fi.ModTime(),
		UpdatedAt: fi.ModTime(),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		info.UpdatedAt = time.Unix(st.Atim.Unix())
	}
	if s.labels != nil {
		l, err := s.labels.Get(dgst)
		if err != nil {
			return content.Info{}, fmt.Errorf("content %s: labels: %w", dgst, err)
		}
		info.Labels = l
	}
	return info, nil
}

func blobErr(dgst digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
	}
	return fmt.Errorf("content %s: %w", dgst, err)
}

// Update implements content.Manager. Only labels can change.
func (s *Store) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	p, err := s.blobPath(info.Digest)
	if err != nil {
		return content.Info{}, err
	}
	if s.labels == nil {
		return content.Info{}, fmt.Errorf("content %s: labels: %w", info.Digest, errdefs.ErrNotImplemented)
	}
	all := len(fieldpaths) == 0
	some := map[string]string{}
	for _, fp := range fieldpaths {
		if k, ok := strings.CutPrefix(fp, "labels."); ok {
			some[k] = info.Labels[k]
		} else if fp == "labels" {
			all = true
		} else {
			return content.Info{}, fmt.Errorf("content %s: cannot update field %q: %w", info.Digest, fp, errdefs.ErrInvalidArgument)
		}
	}

	s.lmu.Lock()
	defer s.lmu.Unlock()
	fi, err := os.Stat(p)
	if err != nil {
		return content.Info{}, blobErr(info.Digest, err)
	}
	next := map[string]string{}
	if all {
		some = info.Labels
	} else {
		cur, err := s.labels.Get(info.Digest)
		if err != nil {
			return content.Info{}, fmt.Errorf("content %s: labels: %w", info.Digest, err)
		}
		for k, v := range cur {
			next[k] = v
		}
	}
	for k, v := range some {
		if v == "" {
			delete(next, k)
		} else {
			next[k] = v
		}
	}
	if err := labels.ValidateAll(next); err != nil {
		return content.Info{}, fmt.Errorf("content %s: %w", info.Digest, err)
	}
	if err := s.labels.Set(info.Digest, next); err != nil {
		return content.Info{}, fmt.Errorf("content %s: labels: %w", info.Digest, err)
	}
	if err := os.Chtimes(p, time.Now(), fi.ModTime()); err != nil {
		return content.Info{}, blobErr(info.Digest, err)
	}
	if fi, err = os.Stat(p); err != nil {
		return content.Info{}, blobErr(info.Digest, err)
	}
	return s.info(info.Digest, fi)
}

// Walk implements content.Manager.
func (s *Store) Walk(ctx context.Context, fn content.WalkFunc, fstrs ...string) error {
	filter, err := filters.ParseAll(fstrs...)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("content store %s: %w", s.root, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		dgst := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !e.Type().IsRegular() || content.ValidateDigest(dgst) != nil {
			continue // not a blob: nothing this store wrote
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		} else if err != nil {
			return blobErr(dgst, err)
		}
		info, err := s.info(dgst, fi)
		if err != nil {
			return err
		}
		if !filter.Match(content.AdaptInfo(info)) {
			continue
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements content.Manager.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	p, err := s.blobPath(dgst)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return blobErr(dgst, err)
	}
	if s.labels != nil {
		s.lmu.Lock()
		defer s.lmu.Unlock()
		if err := s.labels.Set(dgst, nil); err != nil {
			return fmt.Errorf("content %s: labels: %w", dgst, err)
		}
	}
	return nil
}

// ReaderAt implements content.Provider.
func (s *Store) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	p, err := s.blobPath(desc.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME, 0)
	if errors.Is(err, fs.ErrPermission) {
		f, err = os.Open(p) // O_NOATIME needs ownership or CAP_FOWNER
	}
	if err != nil {
		return nil, blobErr(desc.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobErr(desc.Digest, err)
	}
	return &blobReader{f: f, size: fi.Size()}, nil
}

type blobReader struct {
	f    *os.File
	size int64
}

func (r *blobReader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *blobReader) Close() error                            { return r.f.Close() }
func (r *blobReader) Size() int64                             { return r.size }

// Status implements content.IngestManager.
func (s *Store) Status(ctx context.Context, ref string) (content.Status, error) {
	if ref == "" {
		return content.Status{}, fmt.Errorf("ref must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	st, err := readStatus(s.ingestDir(ref))
	if err == nil && st.Ref != ref {
		err = fs.ErrNotExist
	}
	if err != nil {
		return content.Status{}, ingestErr(ref, err)
	}
	return st, nil
}

func ingestErr(ref string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	return fmt.Errorf("ingest %q: %w", ref, err)
}

// ListStatuses implements content.IngestManager. Ingests that cannot be
// read (being created or removed) are left out.
func (s *Store) ListStatuses(ctx context.Context, fstrs ...string) ([]content.Status, error) {
	filter, err := filters.ParseAll(fstrs...)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return nil, fmt.Errorf("content store %s: %w", s.root, err)
	}
	var out []content.Status
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := readStatus(filepath.Join(s.ingestRoot(), e.Name()))
		if err != nil {
			log.G(ctx).WithError(err).WithField("ingest", e.Name()).Debug("skipping unreadable ingest")
			continue
		}
		if filter.Match(content.AdaptStatus(st)) {
			out = append(out, st)
		}
	}
	return out, nil
}

// Abort implements content.IngestManager. An open Writer on ref is not
// stopped, but its Commit will fail.
func (s *Store) Abort(ctx context.Context, ref string) error {
	if ref == "" {
		return fmt.Errorf("ref must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	dir := s.ingestDir(ref)
	if _, err := os.Stat(dir); err != nil {
		return ingestErr(ref, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return ingestErr(ref, err)
	}
	return nil
}

// errCorrupt marks an ingest file that exists but cannot be parsed.
var errCorrupt = errors.New("corrupt ingest file")

// readStatus reads the status of the ingest in dir. A missing file is
// fs.ErrNotExist, a malformed one errCorrupt.
func readStatus(dir string) (content.Status, error) {
	ref, err := os.ReadFile(filepath.Join(dir, "ref"))
	if err != nil {
		return content.Status{}, err
	}
	fi, err := os.Stat(filepath.Join(dir, "data"))
	if err != nil {
		return content.Status{}, err
	}
	st := content.Status{Ref: string(ref), Offset: fi.Size()}
	if st.StartedAt, err = readTime(filepath.Join(dir, "startedat")); err != nil {
		return content.Status{}, err
	}
	if st.UpdatedAt, err = readTime(filepath.Join(dir, "updatedat")); err != nil {
		return content.Status{}, err
	}
	// updatedat is written when the ingest starts; data written since
	// shows in the modification time of data.
	if fi.ModTime().After(st.UpdatedAt) {
		st.UpdatedAt = fi.ModTime()
	}
	if b, err := os.ReadFile(filepath.Join(dir, "total")); err == nil {
		if st.Total, err = strconv.ParseInt(string(b), 10, 64); err != nil {
			return content.Status{}, fmt.Errorf("%w: total: %v", errCorrupt, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return content.Status{}, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "expected")); err == nil {
		st.Expected = digest.Digest(b)
		if err := content.ValidateDigest(st.Expected); err != nil {
			return content.Status{}, fmt.Errorf("%w: expected: %v", errCorrupt, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return content.Status{}, err
	}
	return st, nil
}

func readTime(p string) (time.Time, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return time.Time{}, err
	}
	var t time.Time
	if err := t.UnmarshalText(b); err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", errCorrupt, filepath.Base(p), err)
	}
	return t, nil
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
