package metadata

import (
	"context"
	"os"
	"sync"
	"testing"

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
	db := openDB(t)
	sn, err := native.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
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
	if n, err := s.SweepBackend(context.Background()); err != nil || n != 1 {
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
	if n, _ := s.SweepBackend(context.Background()); n != 3 {
		t.Errorf("backend sweep removed %d, want 3 (top, layer1, leased)", n)
	}
	var left int
	_ = sn.Walk(context.Background(), func(context.Context, snapshots.Info) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d backend snapshots left", left)
	}
}
