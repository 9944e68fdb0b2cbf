package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/berth-dev/berth/internal/batch"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/snapshots"
)

var (
	bucketV1        = []byte("v1")
	bucketSnapshots = []byte("snapshots")
	bucketChildren  = []byte("children")
	bucketLabels    = []byte("labels")

	keyID      = []byte("id")
	keyKind    = []byte("kind")
	keyParent  = []byte("parent")
	keyCreated = []byte("created")
	keyUpdated = []byte("updated")
	keyInodes  = []byte("inodes")
	keySize    = []byte("size")
)

// MetaStore holds the records of one snapshotter's snapshots in a bbolt
// file; the schema is in the package documentation. Every Update is
// fsync'd before it returns; concurrent Updates share one transaction and
// one fsync (group commit, as in the metadata database), and so do the
// directory syncs they ask for (Tx.SyncDirBesideCommit).
type MetaStore struct {
	db *bolt.DB

	mu     sync.Mutex
	closed bool

	queue *batch.Queue[*call]

	// writeMu spans a write transaction and, when its commit fails, the
	// undoing of its BeforeCommit functions, so that no other transaction
	// sees their effects without their records.
	writeMu sync.Mutex
}

type call struct {
	fn  func(*Tx) error
	err chan error
}

// NewMetaStore opens (creating if needed) the bbolt file at path. A file
// that another process holds open is an error after a second.
func NewMetaStore(path string) (*MetaStore, error) {
	// As the metadata database: the free list is rebuilt when the file is
	// opened instead of written with every commit.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata %q: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		if _, err := v1.CreateBucketIfNotExists(bucketSnapshots); err != nil {
			return err
		}
		_, err = v1.CreateBucketIfNotExists(bucketChildren)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise snapshot metadata %q: %w", path, err)
	}
	ms := &MetaStore{db: db}
	ms.queue = batch.New(ms.commit)
	return ms, nil
}

// Close closes the file. Closing twice is not an error.
func (ms *MetaStore) Close() error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.closed {
		return nil
	}
	ms.closed = true
	return ms.db.Close()
}

// View runs fn in a read-only transaction.
func (ms *MetaStore) View(fn func(*Tx) error) error {
	return ms.db.View(func(tx *bolt.Tx) error {
		return fn(newTx(tx, nil))
	})
}

// Update runs fn in a read-write transaction, committed (and synced) if fn
// returns nil, rolled back otherwise. The transaction may hold the calls of
// other goroutines too: fn must change nothing but the records (side
// effects go in Tx.BeforeCommit), and it may run more than once, when a
// sibling in its batch fails; a failing fn, or a failing BeforeCommit
// function of its own, never takes a sibling's changes down with it.
func (ms *MetaStore) Update(fn func(*Tx) error) error {
	c := &call{fn: fn, err: make(chan error, 1)}
	ms.queue.Add(c)
	return <-c.err
}

// Exclusive runs fn alone in a read-write transaction, committed if fn
// returns nil. fn runs once and may have side effects.
func (ms *MetaStore) Exclusive(fn func(*Tx) error) error {
	h := &hooks{}
	return ms.update(h, func(tx *bolt.Tx) error {
		if err := fn(newTx(tx, h)); err != nil {
			return err
		}
		return h.run()
	})
}

// update runs a write transaction whose BeforeCommit functions are h's;
// when the commit itself fails after they ran, they are undone before any
// other transaction starts.
func (ms *MetaStore) update(h *hooks, fn func(*bolt.Tx) error) error {
	ms.writeMu.Lock()
	defer ms.writeMu.Unlock()
	err := ms.db.Update(fn)
	if err != nil && h.ran {
		h.undoAll()
	}
	return err
}

// commit applies a batch in one transaction; a call that fails it, in its
// function or in a BeforeCommit function of its own, runs alone and the
// others are tried together again (batch.Isolate).
func (ms *MetaStore) commit(calls []*call) {
	batch.Isolate(calls, func(calls []*call) (failed int, err error) {
		failed = -1
		h := &hooks{}
		err = ms.update(h, func(tx *bolt.Tx) error {
			for i, c := range calls {
				h.owner = i
				if err := safe(c.fn, newTx(tx, h)); err != nil {
					failed = i
					return err
				}
			}
			if err := h.run(); err != nil {
				var he *hookError
				if errors.As(err, &he) {
					failed = he.owner
				}
				return err
			}
			return nil
		})
		return failed, err
	}, func(c *call) error {
		return ms.Exclusive(func(tx *Tx) error { return safe(c.fn, tx) })
	}, func(c *call, err error) { c.err <- err })
}

func safe(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("snapshot transaction panicked: %v: %w", r, errdefs.ErrInternal)
		}
	}()
	return fn(tx)
}

// hooks are what the calls of one transaction asked to be done before it
// commits.
type hooks struct {
	do     []func() error
	undo   []func()
	owners []int               // the batch index of the call that registered each
	owner  int                 // the call registering now
	ran    bool                // every do function succeeded
	syncs  map[string]*dirSync // started after the do functions
}

// hookError is the failure of a BeforeCommit function of the call owner.
type hookError struct {
	owner int
	err   error
}

func (e *hookError) Error() string { return e.err.Error() }
func (e *hookError) Unwrap() error { return e.err }

// dirSync is the fsync of a directory that runs beside a commit.
type dirSync struct {
	done chan struct{}
	err  error
}

// run calls the do functions in order, then starts the directory syncs. On
// an error it undoes what it did, while the transaction still excludes
// every other writer.
func (h *hooks) run() error {
	for i, fn := range h.do {
		if err := fn(); err != nil {
			h.undoFrom(i - 1)
			return &hookError{owner: h.owners[i], err: err}
		}
	}
	h.ran = true
	for d, ds := range h.syncs {
		go func() {
			ds.err = syncDir(d)
			close(ds.done)
		}()
	}
	return nil
}

// undoFrom runs the undo functions from i down to the first.
func (h *hooks) undoFrom(i int) {
	for ; i >= 0; i-- {
		if h.undo[i] != nil {
			h.undo[i]()
		}
	}
}

func (h *hooks) undoAll() { h.undoFrom(len(h.do) - 1) }

// Tx is a transaction on the snapshot records.
type Tx struct {
	snapshots *bolt.Bucket
	children  *bolt.Bucket
	hooks     *hooks
}

func newTx(tx *bolt.Tx, h *hooks) *Tx {
	v1 := tx.Bucket(bucketV1)
	return &Tx{snapshots: v1.Bucket(bucketSnapshots), children: v1.Bucket(bucketChildren), hooks: h}
}

// BeforeCommit has do run inside the transaction once every call of its
// batch has succeeded, before the commit: the
// place for side effects that must happen before the records are durable
// (installing a directory). Only the run of the call that commits
// registers it. When a later do function fails, undo (if not nil) runs,
// still inside the transaction. Neither may use
// the Tx.
func (t *Tx) BeforeCommit(do func() error, undo func()) {
	t.hooks.do = append(t.hooks.do, do)
	t.hooks.undo = append(t.hooks.undo, undo)
	t.hooks.owners = append(t.hooks.owners, t.hooks.owner)
}

// SyncDirBesideCommit has dir fsync'd once for the whole batch, starting
// after the BeforeCommit functions, while the records are committed. It
// returns a function that waits for that fsync and returns its error; call
// it only after Update returned nil.
func (t *Tx) SyncDirBesideCommit(dir string) func() error {
	if t.hooks.syncs == nil {
		t.hooks.syncs = map[string]*dirSync{}
	}
	ds := t.hooks.syncs[dir]
	if ds == nil {
		ds = &dirSync{done: make(chan struct{})}
		t.hooks.syncs[dir] = ds
	}
	return func() error {
		<-ds.done
		return ds.err
	}
}

// Snapshot is what a snapshotter needs to know to mount an active or view
// snapshot.
type Snapshot struct {
	ID        string
	Kind      snapshots.Kind
	ParentIDs []string // the parent chain, nearest first
}

func formatID(id uint64) string { return strconv.FormatUint(id, 10) }

func (t *Tx) bucket(key string) (*bolt.Bucket, error) {
	if key != "" {
		if b := t.snapshots.Bucket([]byte(key)); b != nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
}

// GetInfo returns the id, info and recorded usage of the snapshot key.
func (t *Tx) GetInfo(key string) (string, snapshots.Info, snapshots.Usage, error) {
	b, err := t.bucket(key)
	if err != nil {
		return "", snapshots.Info{}, snapshots.Usage{}, err
	}
	info, err := readInfo(key, b)
	if err != nil {
		return "", snapshots.Info{}, snapshots.Usage{}, err
	}
	return formatID(readID(b)), info, readUsage(b), nil
}

// GetSnapshot returns the snapshot key, which must be active or a view
// (FailedPrecondition otherwise), with its parent chain.
func (t *Tx) GetSnapshot(key string) (Snapshot, error) {
	b, err := t.bucket(key)
	if err != nil {
		return Snapshot{}, err
	}
	kind := readKind(b)
	if kind != snapshots.KindActive && kind != snapshots.KindView {
		return Snapshot{}, fmt.Errorf("snapshot %q is %s, not active or a view: %w", key, kind, errdefs.ErrFailedPrecondition)
	}
	s := Snapshot{ID: formatID(readID(b)), Kind: kind}
	if parent := b.Get(keyParent); len(parent) > 0 {
		if s.ParentIDs, err = t.chain(string(parent)); err != nil {
			return Snapshot{}, err
		}
	}
	return s, nil
}

// chain returns the ids of parent and its ancestors, nearest first.
func (t *Tx) chain(parent string) ([]string, error) {
	var ids []string
	for key := parent; key != ""; {
		b := t.snapshots.Bucket([]byte(key))
		if b == nil {
			return nil, fmt.Errorf("parent %q in the chain of %q is missing: %w", key, parent, errdefs.ErrNotFound)
		}
		ids = append(ids, formatID(readID(b)))
		key = string(b.Get(keyParent))
	}
	return ids, nil
}

// CheckCreate checks that a snapshot key can be created on parent ("" for
// none) and returns the parent chain's ids, nearest first.
func (t *Tx) CheckCreate(key, parent string) ([]string, error) {
	if err := snapshots.ValidateKey("key", key); err != nil {
		return nil, err
	}
	if t.snapshots.Bucket([]byte(key)) != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
	}
	if parent == "" {
		return nil, nil
	}
	pb, err := t.bucket(parent)
	if err != nil {
		return nil, fmt.Errorf("parent of %q: %w", key, err)
	}
	if kind := readKind(pb); kind != snapshots.KindCommitted {
		return nil, fmt.Errorf("parent %q of %q is %s, not committed: %w", parent, key, kind, errdefs.ErrInvalidArgument)
	}
	return t.chain(parent)
}

// CreateSnapshot records a new active or view snapshot key on parent with
// the given labels, under a new id.
func (t *Tx) CreateSnapshot(kind snapshots.Kind, key, parent string, lbls map[string]string) (Snapshot, error) {
	if kind != snapshots.KindActive && kind != snapshots.KindView {
		return Snapshot{}, fmt.Errorf("snapshot %q can not be created %s: %w", key, kind, errdefs.ErrInvalidArgument)
	}
	parentIDs, err := t.CheckCreate(key, parent)
	if err != nil {
		return Snapshot{}, err
	}
	lbls, err = cleanLabels(lbls)
	if err != nil {
		return Snapshot{}, err
	}
	id, err := t.snapshots.NextSequence()
	if err != nil {
		return Snapshot{}, fmt.Errorf("new id for snapshot %q: %w", key, err)
	}
	b, err := t.snapshots.CreateBucket([]byte(key))
	if err != nil {
		return Snapshot{}, fmt.Errorf("record snapshot %q: %w", key, err)
	}
	now := time.Now().UTC()
	info := snapshots.Info{Kind: kind, Parent: parent, Labels: lbls, Created: now, Updated: now}
	if err := writeInfo(b, id, info); err != nil {
		return Snapshot{}, fmt.Errorf("record snapshot %q: %w", key, err)
	}
	if parent != "" {
		pid := readID(t.snapshots.Bucket([]byte(parent)))
		if err := t.children.Put(childKey(pid, id), []byte(key)); err != nil {
			return Snapshot{}, fmt.Errorf("record snapshot %q as a child of %q: %w", key, parent, err)
		}
	}
	return Snapshot{ID: formatID(id), Kind: kind, ParentIDs: parentIDs}, nil
}

// CheckCommit checks that the active snapshot key can be committed as name
// and returns its id.
func (t *Tx) CheckCommit(name, key string) (string, error) {
	if err := snapshots.ValidateKey("name", name); err != nil {
		return "", err
	}
	if err := snapshots.ValidateKey("key", key); err != nil {
		return "", err
	}
	if t.snapshots.Bucket([]byte(name)) != nil {
		return "", fmt.Errorf("snapshot %q: %w", name, errdefs.ErrAlreadyExists)
	}
	b, err := t.bucket(key)
	if err != nil {
		return "", err
	}
	if kind := readKind(b); kind != snapshots.KindActive {
		return "", fmt.Errorf("snapshot %q is %s, not active: %w", key, kind, errdefs.ErrFailedPrecondition)
	}
	return formatID(readID(b)), nil
}

// CommitActive turns the active snapshot key, whose id must be id, into
// the committed snapshot name with the given usage and labels. The
// committed snapshot keeps the id (and so the directory); key is gone.
func (t *Tx) CommitActive(key, name, id string, usage snapshots.Usage, lbls map[string]string) error {
	got, err := t.CheckCommit(name, key)
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("snapshot %q was replaced during its commit: %w", key, errdefs.ErrAborted)
	}
	if lbls, err = cleanLabels(lbls); err != nil {
		return err
	}
	b := t.snapshots.Bucket([]byte(key))
	info, err := readInfo(key, b)
	if err != nil {
		return err
	}
	nid := readID(b)
	if err := t.snapshots.DeleteBucket([]byte(key)); err != nil {
		return fmt.Errorf("delete active snapshot %q: %w", key, err)
	}
	nb, err := t.snapshots.CreateBucket([]byte(name))
	if err != nil {
		return fmt.Errorf("record snapshot %q: %w", name, err)
	}
	now := time.Now().UTC()
	info.Kind, info.Labels, info.Created, info.Updated = snapshots.KindCommitted, lbls, now, now
	if err := writeInfo(nb, nid, info); err != nil {
		return fmt.Errorf("record snapshot %q: %w", name, err)
	}
	if err := writeUsage(nb, usage); err != nil {
		return fmt.Errorf("record usage of snapshot %q: %w", name, err)
	}
	if info.Parent != "" {
		pb, err := t.bucket(info.Parent)
		if err != nil {
			return fmt.Errorf("parent of %q: %w", key, err)
		}
		if err := t.children.Put(childKey(readID(pb), nid), []byte(name)); err != nil {
			return fmt.Errorf("record snapshot %q as a child of %q: %w", name, info.Parent, err)
		}
	}
	return nil
}

// UpdateInfo changes the labels of the snapshot info.Name as described by
// snapshots.Snapshotter.Update and returns the new info.
func (t *Tx) UpdateInfo(info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	b, err := t.bucket(info.Name)
	if err != nil {
		return snapshots.Info{}, err
	}
	cur, err := readInfo(info.Name, b)
	if err != nil {
		return snapshots.Info{}, err
	}
	next := maps.Clone(cur.Labels)
	if next == nil {
		next = map[string]string{}
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels"}
	}
	for _, p := range fieldpaths {
		if k, ok := strings.CutPrefix(p, "labels."); ok {
			if v, ok := info.Labels[k]; ok {
				next[k] = v
			} else {
				delete(next, k)
			}
			continue
		}
		if p != "labels" {
			return snapshots.Info{}, fmt.Errorf("field %q of snapshot %q can not be updated: %w", p, info.Name, errdefs.ErrInvalidArgument)
		}
		next = maps.Clone(info.Labels)
	}
	if next, err = cleanLabels(next); err != nil {
		return snapshots.Info{}, err
	}
	cur.Labels = next
	cur.Updated = time.Now().UTC()
	if err := writeLabels(b, next); err != nil {
		return snapshots.Info{}, err
	}
	if err := putTime(b, keyUpdated, cur.Updated); err != nil {
		return snapshots.Info{}, err
	}
	return cur, nil
}

// Remove deletes the record of the snapshot key, which must have no
// children, and returns its id and kind.
func (t *Tx) Remove(key string) (string, snapshots.Kind, error) {
	b, err := t.bucket(key)
	if err != nil {
		return "", 0, err
	}
	id, kind := readID(b), readKind(b)
	prefix := childKey(id, 0)[:8]
	if k, v := t.children.Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return "", 0, fmt.Errorf("cannot remove snapshot %q: it has children, such as %q: %w", key, v, errdefs.ErrFailedPrecondition)
	}
	if parent := b.Get(keyParent); len(parent) > 0 {
		if pb := t.snapshots.Bucket(parent); pb != nil {
			if err := t.children.Delete(childKey(readID(pb), id)); err != nil {
				return "", 0, err
			}
		}
	}
	if err := t.snapshots.DeleteBucket([]byte(key)); err != nil {
		return "", 0, fmt.Errorf("delete snapshot %q: %w", key, err)
	}
	return formatID(id), kind, nil
}

// Walk calls fn with the info of every snapshot, in key order.
func (t *Tx) Walk(fn func(snapshots.Info) error) error {
	return t.snapshots.ForEachBucket(func(k []byte) error {
		info, err := readInfo(string(k), t.snapshots.Bucket(k))
		if err != nil {
			return err
		}
		return fn(info)
	})
}

// IDs maps the id of every snapshot to its key.
func (t *Tx) IDs() map[string]string {
	ids := map[string]string{}
	t.snapshots.ForEachBucket(func(k []byte) error {
		ids[formatID(readID(t.snapshots.Bucket(k)))] = string(k)
		return nil
	})
	return ids
}

// childKey is the children index key: parent id then child id, 8 bytes
// big-endian each, so that a parent's children are one prefix.
func childKey(parent, child uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, parent)
	binary.BigEndian.PutUint64(k[8:], child)
	return k
}

// cleanLabels drops labels with empty values and validates the rest.
func cleanLabels(m map[string]string) (map[string]string, error) {
	var out map[string]string
	for k, v := range m {
		if v == "" {
			continue
		}
		if err := labels.Validate(k, v); err != nil {
			return nil, err
		}
		if out == nil {
			out = make(map[string]string, len(m))
		}
		out[k] = v
	}
	return out, nil
}

func readID(b *bolt.Bucket) uint64 {
	id, _ := binary.Uvarint(b.Get(keyID))
	return id
}

func readKind(b *bolt.Bucket) snapshots.Kind {
	if v := b.Get(keyKind); len(v) == 1 {
		return snapshots.Kind(v[0])
	}
	return snapshots.KindUnknown
}

func readUsage(b *bolt.Bucket) snapshots.Usage {
	inodes, _ := binary.Varint(b.Get(keyInodes))
	size, _ := binary.Varint(b.Get(keySize))
	return snapshots.Usage{Inodes: inodes, Size: size}
}

func readInfo(key string, b *bolt.Bucket) (snapshots.Info, error) {
	info := snapshots.Info{
		Kind:   readKind(b),
		Name:   key,
		Parent: string(b.Get(keyParent)),
	}
	if err := info.Created.UnmarshalBinary(b.Get(keyCreated)); err != nil {
		return snapshots.Info{}, fmt.Errorf("snapshot %q: created time: %w", key, err)
	}
	if err := info.Updated.UnmarshalBinary(b.Get(keyUpdated)); err != nil {
		return snapshots.Info{}, fmt.Errorf("snapshot %q: updated time: %w", key, err)
	}
	if lb := b.Bucket(bucketLabels); lb != nil {
		info.Labels = map[string]string{}
		lb.ForEach(func(k, v []byte) error {
			info.Labels[string(k)] = string(v)
			return nil
		})
	}
	return info, nil
}

func writeInfo(b *bolt.Bucket, id uint64, info snapshots.Info) error {
	if err := b.Put(keyID, binary.AppendUvarint(nil, id)); err != nil {
		return err
	}
	if err := b.Put(keyKind, []byte{byte(info.Kind)}); err != nil {
		return err
	}
	if info.Parent != "" {
		if err := b.Put(keyParent, []byte(info.Parent)); err != nil {
			return err
		}
	}
	if err := putTime(b, keyCreated, info.Created); err != nil {
		return err
	}
	if err := putTime(b, keyUpdated, info.Updated); err != nil {
		return err
	}
	return writeLabels(b, info.Labels)
}

func writeUsage(b *bolt.Bucket, u snapshots.Usage) error {
	if err := b.Put(keyInodes, binary.AppendVarint(nil, u.Inodes)); err != nil {
		return err
	}
	return b.Put(keySize, binary.AppendVarint(nil, u.Size))
}

func putTime(b *bolt.Bucket, key []byte, t time.Time) error {
	v, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// writeLabels replaces the labels bucket; no labels, no bucket.
func writeLabels(b *bolt.Bucket, m map[string]string) error {
	if err := b.DeleteBucket(bucketLabels); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
		return err
	}
	if len(m) == 0 {
		return nil
	}
	lb, err := b.CreateBucket(bucketLabels)
	if err != nil {
		return err
	}
	for k, v := range m {
		if err := lb.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}
