package metadata

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/leases"
	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/native"
	"github.com/berth-dev/berth/internal/snapshots/overlay"
	"github.com/berth-dev/berth/internal/snapshots/testsuite"
	"github.com/containerd/errdefs"
)

// inNamespace runs every call of a SnapshotStore in one namespace, so the
// shared snapshotter suite can run against the metadata layer.
type inNamespace struct {
	s  *SnapshotStore
	db *DB
	ns string
}

func (w inNamespace) c(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, w.ns)
}
func (w inNamespace) Stat(ctx context.Context, k string) (snapshots.Info, error) {
	return w.s.Stat(w.c(ctx), k)
}
func (w inNamespace) Update(ctx context.Context, i snapshots.Info, p ...string) (snapshots.Info, error) {
	return w.s.Update(w.c(ctx), i, p...)
}
func (w inNamespace) Usage(ctx context.Context, k string) (snapshots.Usage, error) {
	return w.s.Usage(w.c(ctx), k)
}
func (w inNamespace) Mounts(ctx context.Context, k string) ([]mount.Mount, error) {
	return w.s.Mounts(w.c(ctx), k)
}
func (w inNamespace) Prepare(ctx context.Context, k, p string, o ...snapshots.Opt) ([]mount.Mount, error) {
	return w.s.Prepare(w.c(ctx), k, p, o...)
}
func (w inNamespace) View(ctx context.Context, k, p string, o ...snapshots.Opt) ([]mount.Mount, error) {
	return w.s.View(w.c(ctx), k, p, o...)
}
func (w inNamespace) Commit(ctx context.Context, n, k string, o ...snapshots.Opt) error {
	return w.s.Commit(w.c(ctx), n, k, o...)
}
func (w inNamespace) Remove(ctx context.Context, k string) error { return w.s.Remove(w.c(ctx), k) }
func (w inNamespace) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	return w.s.Walk(w.c(ctx), fn, fs...)
}
func (w inNamespace) Cleanup(ctx context.Context) error { return w.s.Cleanup(w.c(ctx)) }
func (w inNamespace) Close() error {
	err := w.s.Close()
	w.db.Close()
	return err
}

var (
	suiteDBsMu sync.Mutex
	suiteDBs   = map[string]string{}
)

// suiteDB keeps the metadata of a suite snapshotter outside its root (the
// suite checks that nothing appears beside it), the same across reopens.
func suiteDB(t *testing.T, root string) string {
	suiteDBsMu.Lock()
	defer suiteDBsMu.Unlock()
	if p, ok := suiteDBs[root]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "berth-suite-meta-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	suiteDBs[root] = dir + "/meta.db"
	return suiteDBs[root]
}

func TestSnapshotStoreSuite(t *testing.T) {
	for name, backend := range map[string]func(string) (snapshots.Snapshotter, error){"overlayfs": overlay.New, "native": native.New} {
		testsuite.Run(t, "metadata-"+name, func(ctx context.Context, root string) (snapshots.Snapshotter, error) {
			if err := os.MkdirAll(root, 0o700); err != nil {
				return nil, err
			}
			db, err := Open(suiteDB(t, root))
			if err != nil {
				return nil, err
			}
			sn, err := backend(root)
			if err != nil {
				db.Close()
				return nil, err
			}
			return inNamespace{s: NewSnapshotStore(db, name, sn), db: db, ns: "suite"}, nil
		})
	}
}

func TestSnapshotNamespacesLeasesGC(t *testing.T) {
	db, sn := nativeBackend(t)
	s := NewSnapshotStore(db, "native", sn)
	a := namespaces.WithNamespace(context.Background(), "a")
	b := namespaces.WithNamespace(context.Background(), "b")
	if _, err := s.Prepare(a, "k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(b, "k"); !errdefs.IsNotFound(err) {
		t.Fatalf("snapshot of namespace a seen from b: %v", err)
	}
	if _, err := s.Prepare(b, "k", ""); err != nil {
		t.Fatalf("same key in another namespace: %v", err)
	}
	if _, err := s.Prepare(a, "k", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second prepare: %v", err)
	}
	if _, err := s.Prepare(b, "child", "k"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("prepare on an active parent: %v", err)
	}
	if err := s.Commit(a, "layer1", "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(a, "top", "layer1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(a, "layer1"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("remove a parent: %v", err)
	}

	// a lease holds what is made under it
	if _, err := db.Leases().Create(a, Lease{ID: "l1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(leases.WithLease(a, "l1"), "leased", ""); err != nil {
		t.Fatal(err)
	}
	res, _ := db.Leases().ListResources(a, "l1")
	if len(res) != 1 || res[0].ID != "leased" || res[0].Type != "snapshots/native" {
		t.Fatalf("lease resources %v", res)
	}
	// a container holds "top" and so its parent; nothing holds b's "k"
	if _, err := db.Containers().Create(a, Container{ID: "c", Runtime: Runtime{Name: "r"}, Spec: spec(), Snapshotter: "native", SnapshotKey: "top"}); err != nil {
		t.Fatal(err)
	}
	res2, err := db.CollectGarbage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res2.Removed["snapshots"] != 1 {
		t.Errorf("snapshot records removed: %v, want b's k only", res2.Removed)
	}
	if n, err := s.Sweep(context.Background()); err != nil || n != 1 {
		t.Errorf("backend sweep removed %d (%v), want 1", n, err)
	}
	for _, key := range []string{"top", "layer1", "leased"} {
		if _, err := s.Stat(a, key); err != nil {
			t.Errorf("%s collected: %v", key, err)
		}
	}
	if _, err := s.Stat(b, "k"); !errdefs.IsNotFound(err) {
		t.Errorf("unreferenced snapshot kept: %v", err)
	}
	// dropping the container frees the chain
	if err := db.Containers().Delete(a, "c"); err != nil {
		t.Fatal(err)
	}
	if err := db.Leases().Delete(a, "l1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CollectGarbage(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Sweep(context.Background()); n != 3 {
		t.Errorf("backend sweep removed %d, want 3 (top, layer1, leased)", n)
	}
	var left int
	_ = sn.Walk(context.Background(), func(context.Context, snapshots.Info) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d backend snapshots left", left)
	}
}

// nativeBackend opens a metadata database and a native snapshotter, each
// in a temporary directory.
func nativeBackend(t *testing.T) (*DB, snapshots.Snapshotter) {
	t.Helper()
	sn, err := native.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	return openDB(t), sn
}

// gatedBackend holds Prepare until release is closed, then fails it with
// fail (if set).
type gatedBackend struct {
	snapshots.Snapshotter
	entered chan struct{}
	release chan struct{}
	fail    error
}

func (g *gatedBackend) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	close(g.entered)
	<-g.release
	if g.fail != nil {
		return nil, g.fail
	}
	return g.Snapshotter.Prepare(ctx, key, parent, opts...)
}

// waitRecord waits until Walk (which does not wait for creations in
// flight) lists the record of key, or no longer lists it.
func waitRecord(t *testing.T, s *SnapshotStore, ctx context.Context, key string, listed bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		_ = s.Walk(ctx, func(_ context.Context, i snapshots.Info) error { found = found || i.Name == key; return nil })
		if found == listed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of %q listed: %v, want %v", key, found, listed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The record and the backend snapshot are written at once: a call that
// finds the record while the backend is still at work waits for it, and a
// backend failure takes the record away again.
func TestSnapshotCreateInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail error
	}{
		{"backend succeeds", nil},
		{"backend fails", fmt.Errorf("disk on fire: %w", errdefs.ErrUnavailable)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, sn := nativeBackend(t)
			g := &gatedBackend{Snapshotter: sn, entered: make(chan struct{}), release: make(chan struct{}), fail: tc.fail}
			s := NewSnapshotStore(db, "native", g)
			ctx := namespaces.WithNamespace(context.Background(), "a")
			prepared := make(chan error, 1)
			go func() { _, err := s.Prepare(ctx, "k", ""); prepared <- err }()
			<-g.entered
			waitRecord(t, s, ctx, "k", true)
			mounted := make(chan error, 1)
			go func() { _, err := s.Mounts(ctx, "k"); mounted <- err }()
			select {
			case err := <-mounted:
				t.Fatalf("Mounts returned (%v) before the backend snapshot was made", err)
			case <-time.After(50 * time.Millisecond):
			}
			close(g.release)
			perr, merr := <-prepared, <-mounted
			_, serr := s.Stat(ctx, "k")
			if tc.fail == nil {
				if perr != nil || merr != nil || serr != nil {
					t.Fatalf("prepare %v, mounts %v, stat %v: want all nil", perr, merr, serr)
				}
				return
			}
			if !errdefs.IsUnavailable(perr) {
				t.Errorf("prepare: %v, want the backend's error", perr)
			}
			if !errdefs.IsNotFound(merr) || !errdefs.IsNotFound(serr) {
				t.Errorf("after a failed creation: mounts %v, stat %v, want NotFound", merr, serr)
			}
		})
	}
}

// What a crash can leave: a record whose backend snapshot was never made
// (dropped by Recover, unless it has children) and a backend snapshot
// without a record (removed by Sweep).
func TestSnapshotRecoverCrashLeftovers(t *testing.T) {
	db, sn := nativeBackend(t)
	s := NewSnapshotStore(db, "native", sn)
	ctx := namespaces.WithNamespace(context.Background(), "a")
	for _, k := range []string{"lost", "parent"} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx, "parent-c", "parent"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "child", "parent-c"); err != nil {
		t.Fatal(err)
	}
	// the backend loses "lost" (as if its creation never reached the disk)
	// and, by damage rather than a crash, the parent of a live child; it
	// gains one snapshot nobody recorded
	for _, k := range []string{"lost", "parent-c"} {
		_, r, err := s.get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var cr snapRecord
		if k == "parent-c" {
			// the backend refuses to remove a parent: its child goes
			// first, and comes back without it
			_, cr, _ = s.get(ctx, "child")
			if err := sn.Remove(context.Background(), cr.bkey); err != nil {
				t.Fatal(err)
			}
		}
		if err := sn.Remove(context.Background(), r.bkey); err != nil {
			t.Fatal(err)
		}
		if cr.bkey != "" {
			if _, err := sn.Prepare(context.Background(), cr.bkey, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := sn.Prepare(context.Background(), "a/orphan/x", ""); err != nil {
		t.Fatal(err)
	}
	n, err := s.Recover(context.Background())
	if err != nil || n != 1 {
		t.Errorf("recover dropped %d records (%v), want 1", n, err)
	}
	if _, err := s.Stat(ctx, "lost"); !errdefs.IsNotFound(err) {
		t.Errorf("record without backend snapshot kept: %v", err)
	}
	for _, k := range []string{"parent-c", "child"} {
		if _, err := s.Stat(ctx, k); err != nil {
			t.Errorf("%s: %v (a record with children is kept)", k, err)
		}
	}
	if n, err := s.Sweep(context.Background()); err != nil || n != 1 {
		t.Errorf("sweep removed %d backend snapshots (%v), want 1 (the orphan)", n, err)
	}
}

// A backend with no snapshot at all, under records, is more likely a root
// that was not mounted than a crash: Recover keeps the records.
func TestSnapshotRecoverKeepsRecordsOfAnEmptyBackend(t *testing.T) {
	db, sn := nativeBackend(t)
	s := NewSnapshotStore(db, "native", sn)
	ctx := namespaces.WithNamespace(context.Background(), "a")
	if _, err := s.Prepare(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	empty, err := native.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	s2 := NewSnapshotStore(db, "native", empty)
	if n, err := s2.Recover(context.Background()); err != nil || n != 0 {
		t.Errorf("recover over an empty backend dropped %d records (%v), want none", n, err)
	}
	if _, err := s.Stat(ctx, "k"); err != nil {
		t.Errorf("record dropped: %v", err)
	}
}

// A Remove of a key whose creation is still in flight waits for the
// backend snapshot and removes it too; a failed creation takes its lease
// reference back.
func TestSnapshotRemoveAndLeaseDuringCreate(t *testing.T) {
	db, sn := nativeBackend(t)
	ctx := namespaces.WithNamespace(context.Background(), "a")
	if _, err := db.Leases().Create(ctx, Lease{ID: "l"}); err != nil {
		t.Fatal(err)
	}
	lctx := leases.WithLease(ctx, "l")

	g := &gatedBackend{Snapshotter: sn, entered: make(chan struct{}), release: make(chan struct{})}
	s := NewSnapshotStore(db, "native", g)
	prepared := make(chan error, 1)
	go func() { _, err := s.Prepare(lctx, "k", ""); prepared <- err }()
	<-g.entered
	waitRecord(t, s, ctx, "k", true)
	removed := make(chan error, 1)
	go func() { removed <- s.Remove(ctx, "k") }()
	waitRecord(t, s, ctx, "k", false) // Remove dropped it and waits for the backend
	close(g.release)
	if err := <-prepared; err != nil {
		t.Fatal(err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = sn.Walk(context.Background(), func(context.Context, snapshots.Info) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d backend snapshots left after Remove during the creation", n)
	}

	g = &gatedBackend{Snapshotter: sn, entered: make(chan struct{}), release: make(chan struct{}), fail: errdefs.ErrUnavailable}
	close(g.release)
	s = NewSnapshotStore(db, "native", g)
	if _, err := s.Prepare(lctx, "k2", ""); !errdefs.IsUnavailable(err) {
		t.Fatalf("prepare: %v, want the backend's error", err)
	}
	res, err := db.Leases().ListResources(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.ID == "k2" {
			t.Errorf("lease still holds %q after its creation failed: %v", r.ID, res)
		}
	}
}
