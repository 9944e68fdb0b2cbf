package metadata

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
)

// Snapshot records (under v1/<ns>/snapshots/<snapshotter>/<key>/):
//
//	name        the backend's key or name: <ns>/<nanos>-<seq>/<key>
//	kind        "view", "active" or "committed"
//	parent      the parent's key in this namespace
//	createdat, updatedat
//	children/<key> = ""
//	labels/<k> = <v>
//
// The backend never sees a client's key alone, so namespaces can not clash
// and one namespace can not reach another's snapshots.
var (
	keyKind        = []byte("kind")
	keyParent      = []byte("parent")
	bucketChildren = []byte("children")
	snapshotSeq    atomic.Uint64
)

// SnapshotStore is one backend snapshotter seen through a namespace: keys,
// parents and labels are recorded in the metadata; the backend holds the
// data under namespaced keys. It implements snapshots.Snapshotter.
//
// Invariants: a record names a backend snapshot that exists, except while
// one of the two is being changed: a creation writes the record and the
// backend snapshot at once, each durable with its own sync, and the calls
// that reach the backend through a record (Stat, Usage, Mounts, Commit,
// Remove) wait for a creation still in flight (its backend key is in
// pending); Walk and Update do not, so a snapshot being made is listed, and
// is gone again if its backend write fails. If either write fails the
// other is undone. Commit changes the backend first and then the record; a
// removal drops the record first and leaves any backend leftover to Sweep.
// A crash can leave a backend snapshot without a record (Sweep removes it)
// or, during a creation or a commit, a record without its backend snapshot
// (Recover, at start-up, drops it). With a lease in the context, snapshots
// made are added to it.
type SnapshotStore struct {
	db      *DB
	name    string
	backend snapshots.Snapshotter
	// mu is held shared by creations and commits, during which a backend
	// snapshot may exist without its record, and exclusively by Sweep and
	// Recover, which remove what has no counterpart.
	mu sync.RWMutex

	pendingMu sync.Mutex
	pending   map[string]chan struct{} // backend key → closed once created (or not)
}

var _ snapshots.Snapshotter = (*SnapshotStore)(nil)

// NewSnapshotStore returns the namespaced view of backend, which is
// registered as snapshotter name.
func NewSnapshotStore(db *DB, name string, backend snapshots.Snapshotter) *SnapshotStore {
	return &SnapshotStore{db: db, name: name, backend: backend, pending: map[string]chan struct{}{}}
}

// Backend is the snapshotter below (for garbage collection).
func (s *SnapshotStore) Backend() snapshots.Snapshotter { return s.backend }

// Name is the snapshotter's name.
func (s *SnapshotStore) Name() string { return s.name }

type snapRecord struct {
	bkey     string
	kind     snapshots.Kind
	parent   string
	labels   map[string]string
	created  time.Time
	updated  time.Time
	children int
}

func (s *SnapshotStore) bucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, ns, bucketSnapshots, []byte(s.name))
}

func readSnapRecord(b *bolt.Bucket) snapRecord {
	r := snapRecord{
		bkey:    string(b.Get(keyName)),
		kind:    snapshots.ParseKind(string(b.Get(keyKind))),
		parent:  string(b.Get(keyParent)),
		labels:  readLabels(b),
		created: getTime(b, keyCreatedAt),
		updated: getTime(b, keyUpdatedAt),
	}
	if cb := b.Bucket(bucketChildren); cb != nil {
		// counted with a cursor: Stats misses changes of the current
		// write transaction
		c := cb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			r.children++
		}
	}
	return r
}

func (r snapRecord) info(key string) snapshots.Info {
	return snapshots.Info{Kind: r.kind, Name: key, Parent: r.parent, Labels: r.labels, Created: r.created, Updated: r.updated}
}

func (s *SnapshotStore) notFound(key, ns string) error {
	return fmt.Errorf("snapshot %q in snapshotter %s of namespace %q: %w", key, s.name, ns, errdefs.ErrNotFound)
}

// get reads the record of key in the context's namespace, once no
// creation of the backend key it names is in flight.
func (s *SnapshotStore) get(ctx context.Context, key string) (string, snapRecord, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", snapRecord{}, err
	}
	if key == "" {
		return "", snapRecord{}, s.notFound(key, ns)
	}
	if err := snapshots.ValidateKey("key", key); err != nil {
		return "", snapRecord{}, err
	}
	var r snapRecord
	read := func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			sb := s.bucket(tx, ns)
			if sb == nil || sb.Bucket([]byte(key)) == nil {
				return s.notFound(key, ns)
			}
			r = readSnapRecord(sb.Bucket([]byte(key)))
			return nil
		})
	}
	err = read()
	for err == nil {
		waited, werr := s.waitCreated(ctx, r.bkey)
		if werr != nil || !waited {
			return ns, r, werr
		}
		err = read() // the creation may have failed, and the key be taken again
	}
	return ns, r, err
}

// waitCreated waits for the creation of backend key bkey if one is in
// flight, and says whether it waited.
func (s *SnapshotStore) waitCreated(ctx context.Context, bkey string) (bool, error) {
	s.pendingMu.Lock()
	c := s.pending[bkey]
	s.pendingMu.Unlock()
	if c == nil {
		return false, nil
	}
	select {
	case <-c:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// Stat returns the info of a snapshot.
func (s *SnapshotStore) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	_, r, err := s.get(ctx, key)
	return r.info(key), err
}

// Update changes a snapshot's labels.
func (s *SnapshotStore) Update(ctx context.Context, info snapshots.Info, paths ...string) (snapshots.Info, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return snapshots.Info{}, err
	}
	if err := snapshots.ValidateKey("key", info.Name); err != nil {
		return snapshots.Info{}, err
	}
	var out snapshots.Info
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb == nil || sb.Bucket([]byte(info.Name)) == nil {
			return s.notFound(info.Name, ns)
		}
		b := sb.Bucket([]byte(info.Name))
		r := readSnapRecord(b)
		next, err := applyLabelPaths("snapshot", info.Name, r.labels, info.Labels, paths)
		if err != nil {
			return err
		}
		r.labels, r.updated = next, time.Now().UTC()
		if err := writeLabels(b, next); err != nil {
			return err
		}
		out = r.info(info.Name)
		return putTime(b, keyUpdatedAt, r.updated)
	})
	return out, err
}

// Usage is the backend's usage of the snapshot.
func (s *SnapshotStore) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	_, r, err := s.get(ctx, key)
	if err != nil {
		return snapshots.Usage{}, err
	}
	return s.backend.Usage(ctx, r.bkey)
}

// Mounts returns the mounts of an active or view snapshot.
func (s *SnapshotStore) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	_, r, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if r.kind == snapshots.KindCommitted {
		return nil, fmt.Errorf("snapshot %q is committed and has no mounts; make a view of it: %w", key, errdefs.ErrFailedPrecondition)
	}
	return s.backend.Mounts(ctx, r.bkey)
}

// Prepare makes an active snapshot.
func (s *SnapshotStore) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View makes a read-only snapshot.
func (s *SnapshotStore) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func backendKey(ns, key string) string {
	return ns + "/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(snapshotSeq.Add(1), 36) + "/" + key
}

func (s *SnapshotStore) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := snapshots.ValidateKey("key", key); err != nil {
		return nil, err
	}
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	if err := labels.ValidateAll(info.Labels); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	// check first, so that the common errors cost no backend work
	var pkey string
	err = s.db.View(func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb != nil && sb.Bucket([]byte(key)) != nil {
			return fmt.Errorf("snapshot %q in namespace %q: %w", key, ns, errdefs.ErrAlreadyExists)
		}
		if parent == "" {
			return nil
		}
		if sb == nil || sb.Bucket([]byte(parent)) == nil {
			return fmt.Errorf("parent of snapshot %q: %w", key, s.notFound(parent, ns))
		}
		pr := readSnapRecord(sb.Bucket([]byte(parent)))
		if pr.kind != snapshots.KindCommitted {
			return fmt.Errorf("parent %q of snapshot %q is not committed: %w", parent, key, errdefs.ErrInvalidArgument)
		}
		pkey = pr.bkey
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	bkey := backendKey(ns, key)
	created := make(chan struct{})
	s.pendingMu.Lock()
	s.pending[bkey] = created
	s.pendingMu.Unlock()
	defer func() {
		s.pendingMu.Lock()
		delete(s.pending, bkey)
		s.pendingMu.Unlock()
		close(created)
	}()
	// The backend snapshot and the record are written at once, so that a
	// creation waits for one durable commit's time instead of two.
	var (
		mounts      []mount.Mount
		berr        error
		backendDone = make(chan struct{})
	)
	go func() {
		defer close(backendDone)
		if kind == snapshots.KindView {
			mounts, berr = s.backend.View(ctx, bkey, pkey)
		} else {
			mounts, berr = s.backend.Prepare(ctx, bkey, pkey)
		}
	}()
	now := time.Now().UTC()
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		sb, err := createBucketPath(tx, ns, bucketSnapshots, []byte(s.name))
		if err != nil {
			return err
		}
		if sb.Bucket([]byte(key)) != nil {
			return fmt.Errorf("snapshot %q in namespace %q: %w", key, ns, errdefs.ErrAlreadyExists)
		}
		if parent != "" {
			pb := sb.Bucket([]byte(parent))
			if pb == nil || string(pb.Get(keyName)) != pkey {
				return fmt.Errorf("parent of snapshot %q: %w", key, s.notFound(parent, ns))
			}
			cb, err := pb.CreateBucketIfNotExists(bucketChildren)
			if err != nil {
				return err
			}
			if err := cb.Put([]byte(key), nil); err != nil {
				return err
			}
		}
		b, err := sb.CreateBucket([]byte(key))
		if err != nil {
			return err
		}
		if err := putSnapRecord(b, bkey, kind, parent, now, now, info.Labels); err != nil {
			return err
		}
		_, err = addToLease(ctx, tx, ns, []byte(key), bucketSnapshots, []byte(s.name))
		return err
	})
	<-backendDone
	switch {
	case err != nil:
		if berr == nil {
			if rerr := s.backend.Remove(context.WithoutCancel(ctx), bkey); rerr != nil {
				log.G(ctx).WithError(rerr).WithField("key", bkey).Warn("undo backend snapshot")
			}
		}
		return nil, err
	case berr != nil:
		if derr := s.dropRecord(context.WithoutCancel(ctx), ns, key, bkey, true); derr != nil {
			log.G(ctx).WithError(derr).WithField("key", key).Warn("undo snapshot record")
		}
		return nil, berr
	}
	return mounts, nil
}

func putSnapRecord(b *bolt.Bucket, bkey string, kind snapshots.Kind, parent string, created, updated time.Time, lbls map[string]string) error {
	for k, v := range map[string]string{string(keyName): bkey, string(keyKind): kind.String(), string(keyParent): parent} {
		if err := b.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	if err := putTime(b, keyCreatedAt, created); err != nil {
		return err
	}
	if err := putTime(b, keyUpdatedAt, updated); err != nil {
		return err
	}
	return writeLabels(b, lbls)
}

// Commit turns the active snapshot key into the committed snapshot name.
func (s *SnapshotStore) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	ns, r, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	if err := snapshots.ValidateKey("name", name); err != nil {
		return err
	}
	if r.kind != snapshots.KindActive {
		return fmt.Errorf("snapshot %q is %s, only an active snapshot can be committed: %w", key, r.kind, errdefs.ErrFailedPrecondition)
	}
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	if err := labels.ValidateAll(info.Labels); err != nil {
		return fmt.Errorf("snapshot %q: %w", name, err)
	}
	if _, err := s.Stat(ctx, name); err == nil {
		return fmt.Errorf("snapshot %q in namespace %q: %w", name, ns, errdefs.ErrAlreadyExists)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	bname := backendKey(ns, name)
	if err := s.backend.Commit(ctx, bname, r.bkey); err != nil {
		return err
	}
	now := time.Now().UTC()
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb == nil || sb.Bucket([]byte(key)) == nil || string(sb.Bucket([]byte(key)).Get(keyName)) != r.bkey {
			return fmt.Errorf("snapshot %q was removed during its commit: %w", key, errdefs.ErrNotFound)
		}
		if sb.Bucket([]byte(name)) != nil {
			return fmt.Errorf("snapshot %q in namespace %q: %w", name, ns, errdefs.ErrAlreadyExists)
		}
		if err := sb.DeleteBucket([]byte(key)); err != nil {
			return err
		}
		b, err := sb.CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		if err := putSnapRecord(b, bname, snapshots.KindCommitted, r.parent, now, now, info.Labels); err != nil {
			return err
		}
		if r.parent != "" {
			if pb := sb.Bucket([]byte(r.parent)); pb != nil {
				cb, err := pb.CreateBucketIfNotExists(bucketChildren)
				if err != nil {
					return err
				}
				if err := cb.Delete([]byte(key)); err != nil {
					return err
				}
				if err := cb.Put([]byte(name), nil); err != nil {
					return err
				}
			}
		}
		if err := removeFromLease(ctx, tx, ns, []byte(key), bucketSnapshots, []byte(s.name)); err != nil {
			return err
		}
		_, err = addToLease(ctx, tx, ns, []byte(name), bucketSnapshots, []byte(s.name))
		return err
	})
	if err != nil {
		// the active snapshot is gone in the backend: drop its record too
		_ = s.backend.Remove(context.WithoutCancel(ctx), bname)
		_ = s.dropRecord(context.WithoutCancel(ctx), ns, key, r.bkey, false)
	}
	return err
}

// Remove removes a snapshot without children, record first, then its data.
func (s *SnapshotStore) Remove(ctx context.Context, key string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := snapshots.ValidateKey("key", key); err != nil {
		return err
	}
	var bkey string
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb == nil || sb.Bucket([]byte(key)) == nil {
			return s.notFound(key, ns)
		}
		r := readSnapRecord(sb.Bucket([]byte(key)))
		if r.children > 0 {
			what := "child snapshots"
			if r.children == 1 {
				what = "child snapshot"
			}
			return fmt.Errorf("snapshot %q has %d %s: remove them first: %w", key, r.children, what, errdefs.ErrFailedPrecondition)
		}
		bkey = r.bkey
		return removeSnapRecord(sb, key, r.parent)
	})
	if err != nil {
		return err
	}
	// the record is gone: a creation still in flight only has to finish
	_, _ = s.waitCreated(context.WithoutCancel(ctx), bkey)
	if err := s.backend.Remove(ctx, bkey); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("key", bkey).Warn("backend snapshot left for cleanup")
	}
	return nil
}

func removeSnapRecord(sb *bolt.Bucket, key, parent string) error {
	if parent != "" {
		if pb := sb.Bucket([]byte(parent)); pb != nil {
			if cb := pb.Bucket(bucketChildren); cb != nil {
				if err := cb.Delete([]byte(key)); err != nil {
					return err
				}
			}
		}
	}
	return sb.DeleteBucket([]byte(key))
}

// dropRecord removes the record of key if it still names backend key
// bkey, and with unlease, the key from the context's lease.
func (s *SnapshotStore) dropRecord(ctx context.Context, ns, key, bkey string, unlease bool) error {
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb == nil || sb.Bucket([]byte(key)) == nil {
			return nil
		}
		r := readSnapRecord(sb.Bucket([]byte(key)))
		if r.bkey != bkey {
			return nil
		}
		if unlease {
			if err := removeFromLease(ctx, tx, ns, []byte(key), bucketSnapshots, []byte(s.name)); err != nil {
				return err
			}
		}
		return removeSnapRecord(sb, key, r.parent)
	})
}

// Walk calls fn for the namespace's snapshots matching any filter, sorted
// by key.
func (s *SnapshotStore) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	f, err := snapshots.ParseFilters(fs...)
	if err != nil {
		return err
	}
	var infos []snapshots.Info
	err = s.db.View(func(tx *bolt.Tx) error {
		sb := s.bucket(tx, ns)
		if sb == nil {
			return nil
		}
		return sb.ForEachBucket(func(k []byte) error {
			info := readSnapRecord(sb.Bucket(k)).info(string(k))
			if f.Match(snapshots.AdaptInfo(info)) {
				infos = append(infos, info)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup implements snapshots.Snapshotter: Collect.
func (s *SnapshotStore) Cleanup(ctx context.Context) error {
	_, err := s.Collect(ctx)
	return err
}

// Collect runs Sweep, then lets the backend remove its own leftovers (what
// a killed berthd left of creations and removals in progress), and returns
// how many snapshots Sweep removed. The collector runs it after each
// collection, as containerd's collector cleans its snapshotters, so those
// leftovers go at the collection that follows a start-up.
func (s *SnapshotStore) Collect(ctx context.Context) (int, error) {
	n, err := s.Sweep(ctx)
	if err != nil {
		return n, err
	}
	return n, s.backend.Cleanup(ctx)
}

// maxLostRecords bounds what Recover drops: a crash leaves at most the
// records of the creations then in flight. More than that, or a backend
// with no snapshot at all, points at a backend that is not the one the
// records were written with (a volume not mounted, a database replaced),
// and the records are kept.
const maxLostRecords = 256

// Recover, run once at start-up before any call, drops the records whose
// backend snapshot is gone: what a crash in the middle of a creation or a
// commit leaves (such a record has no children; one that has is kept and
// logged). It returns how many records it dropped.
func (s *SnapshotStore) Recover(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inBackend := map[string]bool{}
	if err := s.backend.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		inBackend[info.Name] = true
		return nil
	}); err != nil {
		return 0, err
	}
	type record struct{ ns, key string }
	var lost []record
	err := s.db.View(func(tx *bolt.Tx) error {
		return s.forEachRecord(tx, func(ns, key string, b *bolt.Bucket) {
			if !inBackend[string(b.Get(keyName))] {
				lost = append(lost, record{ns, key})
			}
		})
	})
	if err != nil || len(lost) == 0 {
		return 0, err
	}
	if len(inBackend) == 0 || len(lost) > maxLostRecords {
		log.G(ctx).WithField("snapshotter", s.name).WithField("records", len(lost)).
			Warn("snapshot records without their backend snapshots kept: the snapshotter's root looks replaced or missing")
		return 0, nil
	}
	dropped := 0
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		dropped = 0
		for _, r := range lost {
			sb := s.bucket(tx, r.ns)
			rec := readSnapRecord(sb.Bucket([]byte(r.key)))
			if rec.children > 0 {
				log.G(ctx).WithField("key", r.key).WithField("namespace", r.ns).Warn("snapshot record without its backend snapshot kept: it has children")
				continue
			}
			if err := removeSnapRecord(sb, r.key, rec.parent); err != nil {
				return err
			}
			dropped++
		}
		return nil
	})
	if err == nil {
		log.G(ctx).WithField("snapshotter", s.name).WithField("records", dropped).Info("dropped snapshot records whose backend snapshot a crash lost")
	}
	return dropped, err
}

// forEachRecord calls fn with every record of this snapshotter, in every
// namespace.
func (s *SnapshotStore) forEachRecord(tx *bolt.Tx, fn func(ns, key string, b *bolt.Bucket)) error {
	return tx.Bucket(bucketV1).ForEachBucket(func(ns []byte) error {
		sb := s.bucket(tx, string(ns))
		if sb == nil {
			return nil
		}
		return sb.ForEachBucket(func(k []byte) error {
			fn(string(ns), string(k), sb.Bucket(k))
			return nil
		})
	})
}

// Sweep removes backend snapshots whose key no namespace records
// (children before parents) and returns how many it removed.
func (s *SnapshotStore) Sweep(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return s.forEachRecord(tx, func(_, _ string, b *bolt.Bucket) { live[string(b.Get(keyName))] = true })
	})
	if err != nil {
		return 0, err
	}
	type node struct {
		key, parent string
	}
	var all []node
	if err := s.backend.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		all = append(all, node{info.Name, info.Parent})
		return nil
	}); err != nil {
		return 0, err
	}
	// remove children before parents: repeat passes over what is left
	removed := 0
	for {
		hasChild := map[string]bool{}
		for _, n := range all {
			hasChild[n.parent] = true
		}
		var rest []node
		progress := false
		for _, n := range all {
			if !live[n.key] && !hasChild[n.key] {
				if err := s.backend.Remove(ctx, n.key); err == nil {
					removed++
					progress = true
					continue
				}
			}
			rest = append(rest, n)
		}
		all = rest
		if !progress {
			return removed, nil
		}
	}
}

// Close closes the backend.
func (s *SnapshotStore) Close() error { return s.backend.Close() }
