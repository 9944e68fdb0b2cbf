package metadata

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketBlob  = []byte("blob")
	keySize     = []byte("size")
	keyRef      = []byte("ref")
	keyExpireAt = []byte("expireat")
	keyExpected = []byte("expected")
)

// IngestExpiry is how long an ingest started without a lease is kept
// before the garbage collector may abort it.
const IngestExpiry = 24 * time.Hour

// maxKeyLength bounds client-chosen names that become bbolt keys but never
// paths: ingest refs, image names, snapshot keys.
const maxKeyLength = 4096

// validateKey checks such a name: not empty, at most max bytes of valid
// UTF-8, no control characters.
func validateKey(kind, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s must not be empty: %w", kind, errdefs.ErrInvalidArgument)
	case len(s) > max:
		return fmt.Errorf("%s %.64q… is %d bytes, longer than %d: %w", kind, s, len(s), max, errdefs.ErrInvalidArgument)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %q is not valid UTF-8: %w", kind, s, errdefs.ErrInvalidArgument)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q holds a control character: %w", kind, s, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func validateRef(ref string) error { return validateKey("ingest ref", ref, maxKeyLength) }

// ContentStore is the content store clients see: the blobs of a backend
// store that is shared by all namespaces, each namespace seeing only those
// its records name (content/blob/<digest>), with their labels. It
// implements content.Store and keeps its semantics, per namespace:
//
//   - A blob written in one namespace is invisible in another until that
//     one commits it too. When the bytes are on disk already the commit
//     only adds the record ("sharing"): it succeeds, and is AlreadyExists
//     only when the namespace has the blob itself.
//   - Ingests are named by the client's ref in content/ingests/<ref>; the
//     backend ingest behind it has a ref of its own, <ns>/<seq>/<ref>, so
//     that namespaces never share or clash on an ingest.
//   - With a lease in the context (leases.WithLease), a new ingest and a
//     committed blob are added to the lease in the same transaction that
//     records them; a lease that does not exist is NotFound.
//   - Delete removes the namespace's record only. The bytes stay on disk
//     until the garbage collector, seeing no namespace refers to them,
//     removes them inside Exclusive; TakeDirty and SetDeleteHook tell it
//     when that may be worth doing.
//
// Changes that touch both the backend and the records (opening a writer,
// commit, delete, abort) hold mu shared, so that a collection running in
// Exclusive sees either none or all of such a change.
type ContentStore struct {
	db      *DB
	backend content.Store

	mu       sync.RWMutex
	dirty    atomic.Bool
	onDelete atomic.Pointer[func(context.Context, digest.Digest)]
}

var _ content.Store = (*ContentStore)(nil)

// NewContentStore returns the namespaced store over backend. Use one per
// backend: writers of two of them would not see each other's refs.
func NewContentStore(db *DB, backend content.Store) *ContentStore {
	return &ContentStore{db: db, backend: backend}
}

// Exclusive runs fn with the backend while no writer is opened or
// committed and no blob or ingest is deleted or aborted: the garbage
// collector marks from the records and sweeps the backend inside it (both
// inside, so that no commit records a blob whose file is being removed).
// fn must not call the ContentStore's own Writer, Commit, Delete or Abort,
// which would wait for it.
func (s *ContentStore) Exclusive(fn func(backend content.Store) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.backend)
}

// TakeDirty reports whether a blob record was deleted since the last call.
func (s *ContentStore) TakeDirty() bool { return s.dirty.Swap(false) }

// SetDeleteHook has fn called after each committed deletion of a blob
// record (nil removes it). fn must not block.
func (s *ContentStore) SetDeleteHook(fn func(ctx context.Context, dgst digest.Digest)) {
	if fn == nil {
		s.onDelete.Store(nil)
		return
	}
	s.onDelete.Store(&fn)
}

func blobNotFound(dgst digest.Digest, ns string) error {
	return fmt.Errorf("content %s in namespace %q: %w", dgst, ns, errdefs.ErrNotFound)
}

func ingestNotFound(ref, ns string) error {
	return fmt.Errorf("ingest %q in namespace %q: %w", ref, ns, errdefs.ErrNotFound)
}

func nsAndDigest(ctx context.Context, dgst digest.Digest) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	return ns, content.ValidateDigest(dgst)
}

// Info implements content.Manager.
func (s *ContentStore) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	ns, err := nsAndDigest(ctx, dgst)
	if err != nil {
		return content.Info{}, err
	}
	var info content.Info
	err = s.db.View(func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketContent, bucketBlob, []byte(dgst))
		if b == nil {
			return blobNotFound(dgst, ns)
		}
		info = readBlobInfo(dgst, b)
		return nil
	})
	return info, err
}

// Update implements content.Manager: fieldpaths "labels" and
// "labels.<key>"; none replaces all labels.
func (s *ContentStore) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	ns, err := nsAndDigest(ctx, info.Digest)
	if err != nil {
		return content.Info{}, err
	}
	var result content.Info
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketContent, bucketBlob, []byte(info.Digest))
		if b == nil {
			return blobNotFound(info.Digest, ns)
		}
		next := readBlobInfo(info.Digest, b)
		l, err := applyLabelPaths("content", info.Digest.String(), next.Labels, info.Labels, fieldpaths)
		if err != nil {
			return err
		}
		next.Labels = l
		next.UpdatedAt = time.Now().UTC()
		result = next
		return writeBlobInfo(b, &next)
	})
	return result, err
}

// walkBatch is how many records Walk reads per transaction: fn runs outside
// transactions, so it may call the store.
const walkBatch = 256

// Walk implements content.Manager: fields digest and labels.<key>, in
// digest order.
func (s *ContentStore) Walk(ctx context.Context, fn content.WalkFunc, fs ...string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	f, err := filters.ParseAll(fs...)
	if err != nil {
		return err
	}
	var after []byte
	for more := true; more; {
		var batch []content.Info
		more = false
		err := s.db.View(func(tx *bolt.Tx) error {
			bb := bucketPath(tx, ns, bucketContent, bucketBlob)
			if bb == nil {
				return nil
			}
			c := bb.Cursor()
			k, _ := c.First()
			if after != nil {
				if k, _ = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			for n := 0; k != nil; k, _ = c.Next() {
				if n == walkBatch {
					more = true
					break
				}
				n++
				after = append(after[:0], k...)
				b := bb.Bucket(k)
				dgst := digest.Digest(k)
				if b == nil || content.ValidateDigest(dgst) != nil {
					continue
				}
				if info := readBlobInfo(dgst, b); f.Match(content.AdaptInfo(info)) {
					batch = append(batch, info)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, info := range batch {
			if err := fn(info); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements content.Manager: the blob leaves this namespace (and
// the lease in ctx); other namespaces keep theirs.
func (s *ContentStore) Delete(ctx context.Context, dgst digest.Digest) error {
	ns, err := nsAndDigest(ctx, dgst)
	if err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		bb := bucketPath(tx, ns, bucketContent, bucketBlob)
		if bb == nil || bb.Bucket([]byte(dgst)) == nil {
			return blobNotFound(dgst, ns)
		}
		if err := bb.DeleteBucket([]byte(dgst)); err != nil {
			return err
		}
		return removeFromLease(ctx, tx, ns, []byte(dgst), bucketContent)
	})
	if err != nil {
		return err
	}
	s.dirty.Store(true)
	if fn := s.onDelete.Load(); fn != nil {
		(*fn)(ctx, dgst)
	}
	return nil
}

// ReaderAt implements content.Provider.
func (s *ContentStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ns, err := nsAndDigest(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if bucketPath(tx, ns, bucketContent, bucketBlob, []byte(desc.Digest)) == nil {
			return blobNotFound(desc.Digest, ns)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.backend.ReaderAt(ctx, desc)
}

// ingestRecord is what content/ingests/<ref> holds.
type ingestRecord struct {
	bref     string
	expected digest.Digest
}

func readIngest(b *bolt.Bucket) ingestRecord {
	return ingestRecord{bref: string(b.Get(keyRef)), expected: digest.Digest(b.Get(keyExpected))}
}

// Status implements content.IngestManager.
func (s *ContentStore) Status(ctx context.Context, ref string) (content.Status, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return content.Status{}, err
	}
	if err := validateRef(ref); err != nil {
		return content.Status{}, err
	}
	var rec ingestRecord
	err = s.db.View(func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketContent, bucketIngests, []byte(ref))
		if b == nil {
			return ingestNotFound(ref, ns)
		}
		rec = readIngest(b)
		return nil
	})
	if err != nil {
		return content.Status{}, err
	}
	st, err := s.backend.Status(ctx, rec.bref)
	if errdefs.IsNotFound(err) {
		return content.Status{}, ingestNotFound(ref, ns)
	} else if err != nil {
		return content.Status{}, err
	}
	return rec.status(ref, st), nil
}

func (rec ingestRecord) status(ref string, st content.Status) content.Status {
	st.Ref = ref
	if st.Expected == "" {
		st.Expected = rec.expected
	}
	return st
}

// ListStatuses implements content.IngestManager: field ref, sorted by ref.
func (s *ContentStore) ListStatuses(ctx context.Context, fs ...string) ([]content.Status, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filters.ParseAll(fs...)
	if err != nil {
		return nil, err
	}
	recs := map[string]ingestRecord{}
	err = s.db.View(func(tx *bolt.Tx) error {
		ib := bucketPath(tx, ns, bucketContent, bucketIngests)
		if ib == nil {
			return nil
		}
		return ib.ForEachBucket(func(k []byte) error {
			recs[string(k)] = readIngest(ib.Bucket(k))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var out []content.Status
	for ref, rec := range recs {
		st, err := s.backend.Status(ctx, rec.bref)
		if errdefs.IsNotFound(err) {
			continue // shared with an existing blob, or not started
		} else if err != nil {
			return nil, err
		}
		if st = rec.status(ref, st); f.Match(content.AdaptStatus(st)) {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Abort implements content.IngestManager.
func (s *ContentStore) Abort(ctx context.Context, ref string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := validateRef(ref); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var rec ingestRecord
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		ib := bucketPath(tx, ns, bucketContent, bucketIngests)
		if ib == nil || ib.Bucket([]byte(ref)) == nil {
			return ingestNotFound(ref, ns)
		}
		rec = readIngest(ib.Bucket([]byte(ref)))
		if err := ib.DeleteBucket([]byte(ref)); err != nil {
			return err
		}
		return removeFromLease(ctx, tx, ns, []byte(ref), bucketIngests)
	})
	if err != nil {
		return err
	}
	// A shared ingest has nothing in the backend.
	if err := s.backend.Abort(ctx, rec.bref); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("ingest %q in namespace %q: %w", ref, ns, err)
	}
	return nil
}

// Writer implements content.Ingester. A digest given with WithDescriptor
// that this namespace has is AlreadyExists (and is added to the lease in
// ctx); one that only the backend has gives a writer that shares it: its
// status is complete at once and Commit just records the blob here.
func (s *ContentStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if err := validateRef(wo.Ref); err != nil {
		return nil, err
	}
	if wo.Desc.Size < 0 {
		return nil, fmt.Errorf("ingest %q: negative size %d: %w", wo.Ref, wo.Desc.Size, errdefs.ErrInvalidArgument)
	}
	if wo.Desc.Digest != "" {
		if err := content.ValidateDigest(wo.Desc.Digest); err != nil {
			return nil, err
		}
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()

	var (
		exists, shared bool
		size           int64
		rec            ingestRecord
	)
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		exists, shared, size, rec = false, false, wo.Desc.Size, ingestRecord{}
		if d := wo.Desc.Digest; d != "" {
			if bucketPath(tx, ns, bucketContent, bucketBlob, []byte(d)) != nil {
				exists = true
				_, err := addToLease(ctx, tx, ns, []byte(d), bucketContent)
				return err
			}
			if info, err := s.backend.Info(ctx, d); err == nil && (size == 0 || size == info.Size) {
				shared, size = true, info.Size
			}
		}
		ib, err := createBucketPath(tx, ns, bucketContent, bucketIngests)
		if err != nil {
			return err
		}
		b := ib.Bucket([]byte(wo.Ref))
		if b == nil {
			if b, err = ib.CreateBucket([]byte(wo.Ref)); err != nil {
				return err
			}
			seq, err := ib.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(keyRef, fmt.Appendf(nil, "%s/%d/%s", ns, seq, wo.Ref)); err != nil {
				return err
			}
		}
		if wo.Desc.Digest != "" {
			if err := b.Put(keyExpected, []byte(wo.Desc.Digest)); err != nil {
				return err
			}
		}
		rec = readIngest(b)
		leased, err := addToLease(ctx, tx, ns, []byte(wo.Ref), bucketIngests)
		if err != nil || leased {
			return err
		}
		return putTime(b, keyExpireAt, time.Now().UTC().Add(IngestExpiry))
	})
	if err != nil {
		return nil, err
	}
	if exists {
		return nil, fmt.Errorf("content %s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
	}
	w := &nsWriter{s: s, ns: ns, ref: wo.Ref, bref: rec.bref, expected: rec.expected, size: size, started: time.Now()}
	if shared {
		return w, nil
	}
	// The backend must not compare the digest with its own blobs: the
	// namespace has to commit it before it sees it.
	bw, err := s.backend.Writer(ctx, content.WithRef(rec.bref), content.WithDescriptor(ocispec.Descriptor{Size: size}))
	if err != nil {
		return nil, fmt.Errorf("ingest %q in namespace %q: %w", wo.Ref, ns, err)
	}
	w.w = bw
	return w, nil
}

// nsWriter writes one ingest of a namespace through a backend writer, or,
// while it shares a blob the backend has already, without one.
type nsWriter struct {
	s        *ContentStore
	ns, ref  string
	bref     string         // the backend's ref
	w        content.Writer // nil while sharing
	expected digest.Digest
	size     int64 // of the shared blob
	started  time.Time
	done     bool
}

func (w *nsWriter) closedErr() error {
	return fmt.Errorf("ingest %q: writer is closed: %w", w.ref, errdefs.ErrFailedPrecondition)
}

func (w *nsWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, w.closedErr()
	}
	if w.w == nil {
		if len(p) == 0 {
			return 0, nil
		}
		if err := w.unshare(w.size); err != nil {
			return 0, err
		}
	}
	return w.w.Write(p)
}

// unshare opens the backend writer and copies the first n bytes of the
// shared blob into it: the client writes past what it was told it had.
func (w *nsWriter) unshare(n int64) error {
	ctx := namespaces.WithNamespace(context.Background(), w.ns)
	bw, err := w.s.backend.Writer(ctx, content.WithRef(w.bref))
	if err != nil {
		return fmt.Errorf("ingest %q in namespace %q: %w", w.ref, w.ns, err)
	}
	err = bw.Truncate(0)
	if err == nil && n > 0 {
		var ra content.ReaderAt
		if ra, err = w.s.backend.ReaderAt(ctx, ocispec.Descriptor{Digest: w.expected}); err == nil {
			_, err = io.Copy(bw, io.NewSectionReader(ra, 0, n))
			ra.Close()
		}
	}
	if err != nil {
		bw.Close()
		return fmt.Errorf("ingest %q in namespace %q: %w", w.ref, w.ns, err)
	}
	w.w = bw
	return nil
}

func (w *nsWriter) Digest() digest.Digest {
	if w.w == nil {
		return w.expected
	}
	return w.w.Digest()
}

func (w *nsWriter) Status() (content.Status, error) {
	if w.done {
		return content.Status{}, w.closedErr()
	}
	if w.w == nil {
		return content.Status{Ref: w.ref, Offset: w.size, Total: w.size, Expected: w.expected, StartedAt: w.started, UpdatedAt: w.started}, nil
	}
	st, err := w.w.Status()
	if err != nil {
		return content.Status{}, err
	}
	return ingestRecord{expected: w.expected}.status(w.ref, st), nil
}

func (w *nsWriter) Truncate(size int64) error {
	if w.done {
		return w.closedErr()
	}
	if size != 0 {
		return fmt.Errorf("ingest %q: truncate to %d: only 0 is supported: %w", w.ref, size, errdefs.ErrInvalidArgument)
	}
	if w.w == nil {
		return w.unshare(0)
	}
	return w.w.Truncate(0)
}

func (w *nsWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.w != nil {
		return w.w.Close()
	}
	return nil
}

// Commit implements content.Writer: the backend verifies and stores the
// bytes (a blob it has already is fine), then one transaction records the
// blob in the namespace, drops the ingest record and moves the lease in
// ctx, if any, from the ingest to the blob. AlreadyExists when the
// namespace had the blob; the ingest is gone either way.
func (w *nsWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if w.done {
		return w.closedErr()
	}
	defer w.Close()
	var base content.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return err
		}
	}
	if err := labels.ValidateAll(base.Labels); err != nil {
		return fmt.Errorf("ingest %q: %w", w.ref, err)
	}
	if expected == "" {
		expected = w.expected
	} else if err := content.ValidateDigest(expected); err != nil {
		return err
	}
	w.s.mu.RLock()
	defer w.s.mu.RUnlock()

	var actual digest.Digest
	if w.w == nil {
		switch {
		case size != 0 && size != w.size:
			return fmt.Errorf("ingest %q: commit size %d, but the blob shared is %d bytes: %w", w.ref, size, w.size, errdefs.ErrFailedPrecondition)
		case expected != w.expected:
			return fmt.Errorf("ingest %q: commit digest %s, but the blob shared is %s: %w", w.ref, expected, w.expected, errdefs.ErrFailedPrecondition)
		}
		if _, err := w.s.backend.Info(ctx, w.expected); err != nil {
			return fmt.Errorf("ingest %q: shared blob: %w", w.ref, err)
		}
		actual, size = w.expected, w.size
	} else {
		st, err := w.w.Status()
		if err != nil {
			return err
		}
		actual = w.w.Digest()
		err = w.w.Commit(ctx, size, expected)
		if err != nil && !errdefs.IsAlreadyExists(err) {
			return err
		}
		size = st.Offset
	}

	ns, ref := w.ns, w.ref
	var exists bool
	err := w.s.db.Update(ctx, func(tx *bolt.Tx) error {
		exists = false
		if ib := bucketPath(tx, ns, bucketContent, bucketIngests); ib != nil {
			// Only our own record: an abort may have let another writer
			// start the ref anew meanwhile.
			if b := ib.Bucket([]byte(ref)); b != nil && string(b.Get(keyRef)) == w.bref {
				if err := ib.DeleteBucket([]byte(ref)); err != nil {
					return err
				}
			}
		}
		if err := removeFromLease(ctx, tx, ns, []byte(ref), bucketIngests); err != nil {
			return err
		}
		bb, err := createBucketPath(tx, ns, bucketContent, bucketBlob)
		if err != nil {
			return err
		}
		if bb.Bucket([]byte(actual)) != nil {
			exists = true
		} else {
			b, err := bb.CreateBucket([]byte(actual))
			if err != nil {
				return err
			}
			now := time.Now().UTC()
			info := content.Info{Digest: actual, Size: size, CreatedAt: now, UpdatedAt: now, Labels: base.Labels}
			if err := writeBlobInfo(b, &info); err != nil {
				return err
			}
		}
		_, err = addToLease(ctx, tx, ns, []byte(actual), bucketContent)
		return err
	})
	if err != nil {
		return fmt.Errorf("content %s in namespace %q: %w", actual, ns, err)
	}
	if w.w == nil {
		// Data written before the ingest became shared is not needed.
		if err := w.s.backend.Abort(ctx, w.bref); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("ref", ref).Warn("aborting the backend ingest of shared content")
		}
	}
	if exists {
		return fmt.Errorf("content %s: %w", actual, errdefs.ErrAlreadyExists)
	}
	return nil
}

func readBlobInfo(dgst digest.Digest, b *bolt.Bucket) content.Info {
	info := content.Info{
		Digest:    dgst,
		CreatedAt: getTime(b, keyCreatedAt),
		UpdatedAt: getTime(b, keyUpdatedAt),
		Labels:    readLabels(b),
	}
	if v := b.Get(keySize); v != nil {
		info.Size, _ = binary.Varint(v)
	}
	return info
}

func writeBlobInfo(b *bolt.Bucket, info *content.Info) error {
	if err := putTime(b, keyCreatedAt, info.CreatedAt); err != nil {
		return err
	}
	if err := putTime(b, keyUpdatedAt, info.UpdatedAt); err != nil {
		return err
	}
	if err := b.Put(keySize, binary.AppendVarint(nil, info.Size)); err != nil {
		return err
	}
	return writeLabels(b, info.Labels)
}
