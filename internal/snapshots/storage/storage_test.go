package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/testutil"
)

func newMetaStore(t *testing.T) *MetaStore {
	t.Helper()
	ms, err := NewMetaStore(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	return ms
}

func TestMetaStoreChains(t *testing.T) {
	ms := newMetaStore(t)
	var ids []string
	parent := ""
	for _, k := range []string{"a", "b", "c"} {
		err := ms.Update(func(tx *Tx) error {
			s, err := tx.CreateSnapshot(snapshots.KindActive, k+"-active", parent, map[string]string{"k": k, "empty": ""})
			if err != nil {
				return err
			}
			if want := slices.Clone(ids); !slices.Equal(s.ParentIDs, reversed(want)) {
				t.Errorf("%s: parent ids %v, want %v", k, s.ParentIDs, reversed(want))
			}
			if err := tx.CommitActive(k+"-active", k, s.ID, snapshots.Usage{Inodes: 2, Size: 4096}, map[string]string{"c": k}); err != nil {
				return err
			}
			ids = append(ids, s.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		parent = k
	}
	err := ms.View(func(tx *Tx) error {
		id, info, usage, err := tx.GetInfo("b")
		if err != nil {
			return err
		}
		if id != ids[1] || info.Parent != "a" || info.Kind != snapshots.KindCommitted || usage.Size != 4096 || len(info.Labels) != 1 || info.Labels["c"] != "b" {
			t.Errorf("b: id %s info %+v usage %+v", id, info, usage)
		}
		if _, _, _, err := tx.GetInfo("b-active"); !errdefs.IsNotFound(err) {
			t.Errorf("committed active's key: %v", err)
		}
		if _, err := tx.GetSnapshot("b"); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("GetSnapshot of a committed one: %v", err)
		}
		if got := tx.IDs(); len(got) != 3 || got[ids[0]] != "a" || got[ids[2]] != "c" {
			t.Errorf("ids %v", got)
		}
		var walked []string
		tx.Walk(func(i snapshots.Info) error { walked = append(walked, i.Name); return nil })
		if !slices.Equal(walked, []string{"a", "b", "c"}) {
			t.Errorf("walk %v", walked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, k := range []string{"a", "b"} {
		err := ms.Update(func(tx *Tx) error { _, _, err := tx.Remove(k); return err })
		if !errdefs.IsFailedPrecondition(err) {
			t.Errorf("remove %s with a child: %v", k, err)
		}
	}
	for _, k := range []string{"c", "b", "a"} {
		err := ms.Update(func(tx *Tx) error {
			id, kind, err := tx.Remove(k)
			if err == nil && (kind != snapshots.KindCommitted || id == "") {
				t.Errorf("remove %s: id %q kind %s", k, id, kind)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Ids are never handed out twice.
	err = ms.Update(func(tx *Tx) error {
		s, err := tx.CreateSnapshot(snapshots.KindView, "v", "", nil)
		if err == nil && slices.Contains(ids, s.ID) {
			t.Errorf("id %s reused", s.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func reversed(s []string) []string {
	slices.Reverse(s)
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestMetaStoreCommitReplaced(t *testing.T) {
	ms := newMetaStore(t)
	err := ms.Update(func(tx *Tx) error {
		_, err := tx.CreateSnapshot(snapshots.KindActive, "k", "", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ms.Update(func(tx *Tx) error { return tx.CommitActive("k", "n", "12345", snapshots.Usage{}, nil) })
	if !errdefs.IsAborted(err) {
		t.Errorf("commit with a stale id: %v, want Aborted", err)
	}
}

// blockingDriver lets a test hold a creation between filling its
// directory and recording it.
type blockingDriver struct {
	layout  Layout
	entered chan string
	proceed chan error
	// pass, when set, lets creations through without blocking.
	pass atomic.Bool
}

func (d *blockingDriver) Populate(ctx context.Context, dir string, kind snapshots.Kind, parentIDs []string) error {
	if err := os.Mkdir(filepath.Join(dir, "fs"), 0o755); err != nil {
		return err
	}
	if d.pass.Load() {
		return nil
	}
	d.entered <- dir
	return <-d.proceed
}

// openPassing opens the snapshotter at root with a blockingDriver that lets
// every creation through.
func openPassing(t *testing.T, root string) *Snapshotter {
	t.Helper()
	d := &blockingDriver{layout: Layout(root)}
	d.pass.Store(true)
	s, err := New(root, d)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (d *blockingDriver) Mounts(s Snapshot) []mount.Mount {
	return []mount.Mount{{Type: "bind", Source: d.layout.FS(s.ID), Options: []string{"rbind"}}}
}

func TestCleanupLeavesCreationsAlone(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d := &blockingDriver{layout: Layout(root), entered: make(chan string), proceed: make(chan error)}
	s, err := New(root, d)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	done := make(chan error)
	go func() {
		_, err := s.Prepare(ctx, "k", "")
		done <- err
	}()
	tmp := <-d.entered
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "fs")); err != nil {
		t.Errorf("cleanup removed a creation in progress: %v", err)
	}
	d.proceed <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ms, err := s.Mounts(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ms[0].Source); err != nil {
		t.Errorf("snapshot directory: %v", err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory left: %v", err)
	}
}

func TestFailedPopulateLeavesNothing(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d := &blockingDriver{layout: Layout(root), entered: make(chan string, 1), proceed: make(chan error, 1)}
	s, err := New(root, d)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	boom := errors.New("boom")
	d.proceed <- boom
	if _, err := s.Prepare(ctx, "k", ""); !errors.Is(err, boom) {
		t.Errorf("prepare: %v, want the driver's error", err)
	}
	<-d.entered
	entries, _ := os.ReadDir(Layout(root).Snapshots())
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	if _, err := s.Stat(ctx, "k"); !errdefs.IsNotFound(err) {
		t.Errorf("stat after a failed prepare: %v", err)
	}

	// The parent going away while its child is populated is NotFound.
	layer := func(name string) {
		t.Helper()
		d.pass.Store(true)
		defer d.pass.Store(false)
		if _, err := s.Prepare(ctx, name+"-a", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, name, name+"-a"); err != nil {
			t.Fatal(err)
		}
	}
	layer("p")
	done := make(chan error)
	go func() {
		_, err := s.Prepare(ctx, "child", "p")
		done <- err
	}()
	<-d.entered
	if err := s.Remove(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	d.proceed <- boom
	if err := <-done; !errdefs.IsNotFound(err) {
		t.Errorf("prepare on a parent removed meanwhile: %v, want NotFound", err)
	}

	// Replaced by another snapshot of the same name: what was populated
	// is based on the old one.
	layer("p")
	go func() {
		_, err := s.Prepare(ctx, "child", "p")
		done <- err
	}()
	<-d.entered
	if err := s.Remove(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	layer("p")
	d.proceed <- nil
	if err := <-done; !errdefs.IsAborted(err) {
		t.Errorf("prepare on a parent replaced meanwhile: %v, want Aborted", err)
	}
	if _, err := s.Stat(ctx, "child"); !errdefs.IsNotFound(err) {
		t.Errorf("aborted child recorded: %v", err)
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	u, err := DiskUsage(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Inodes != 2 || u.Size < 10000 || u.Size > 3*10000 {
		t.Errorf("usage %+v: want 2 inodes (hard link counted once) and about 10000 bytes", u)
	}
}

// Concurrent creations and removals share transactions; one that fails
// (a key taken twice) must neither fail its siblings nor leave a directory.
func TestConcurrentCreateAndRemove(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openPassing(t, root)
	defer s.Close()

	const n = 40
	errs := make(chan error, 2*n)
	for i := range 2 * n {
		go func() {
			_, err := s.Prepare(ctx, fmt.Sprintf("k%d", i%n), "")
			errs <- err
		}()
	}
	failed := 0
	for range 2 * n {
		if err := <-errs; errdefs.IsAlreadyExists(err) {
			failed++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if failed != n {
		t.Fatalf("%d creations of a key taken twice failed, want %d", failed, n)
	}
	dirs := map[string]bool{}
	for i := range n {
		ms, err := s.Mounts(ctx, fmt.Sprintf("k%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if dirs[ms[0].Source] {
			t.Fatalf("two snapshots share %s", ms[0].Source)
		}
		dirs[ms[0].Source] = true
		if _, err := os.Stat(ms[0].Source); err != nil {
			t.Fatalf("snapshot directory: %v", err)
		}
	}
	if entries, _ := os.ReadDir(Layout(root).Snapshots()); len(entries) != n {
		t.Fatalf("%d entries in the snapshots directory, want %d", len(entries), n)
	}
	for i := range 2 * n {
		go func() { errs <- s.Remove(ctx, fmt.Sprintf("k%d", i%n)) }()
	}
	removed := 0
	for range 2 * n {
		if err := <-errs; err == nil {
			removed++
		} else if !errdefs.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	if removed != n {
		t.Fatalf("%d removals succeeded, want %d", removed, n)
	}
	if entries, _ := os.ReadDir(Layout(root).Snapshots()); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if len(s.busy) != 0 {
		t.Fatalf("names still marked busy: %v", s.busy)
	}
}

// A record whose directory was lost (a machine crash while the directory
// syncs ran beside the commit) can still be removed, as the metadata
// store's sweep does.
func TestRemoveWithoutDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openPassing(t, root)
	defer s.Close()
	ms, err := s.Prepare(ctx, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(ms[0].Source)); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "k"); err != nil {
		t.Fatalf("remove of a snapshot without its directory: %v", err)
	}
	if _, err := s.Stat(ctx, "k"); !errdefs.IsNotFound(err) {
		t.Fatalf("stat after remove: %v", err)
	}
}

// A BeforeCommit function that fails fails only the call that registered
// it: its sibling in the batch is undone, tried again and committed.
func TestMetaStoreHookFailureIsolated(t *testing.T) {
	ms := newMetaStore(t)
	var did, undid int
	ok := &call{err: make(chan error, 1), fn: func(tx *Tx) error {
		if _, err := tx.CreateSnapshot(snapshots.KindActive, "ok", "", nil); err != nil {
			return err
		}
		tx.BeforeCommit(func() error { did++; return nil }, func() { undid++ })
		return nil
	}}
	boom := errors.New("boom")
	bad := &call{err: make(chan error, 1), fn: func(tx *Tx) error {
		if _, err := tx.CreateSnapshot(snapshots.KindActive, "bad", "", nil); err != nil {
			return err
		}
		tx.BeforeCommit(func() error { return boom }, nil)
		return nil
	}}
	ms.commit([]*call{ok, bad})
	if err := <-ok.err; err != nil {
		t.Errorf("sibling of a failing hook: %v", err)
	}
	if err := <-bad.err; !errors.Is(err, boom) {
		t.Errorf("call with the failing hook: %v, want boom", err)
	}
	if did != 2 || undid != 1 {
		t.Errorf("sibling's hook ran %d times and was undone %d times, want 2 and 1", did, undid)
	}
	err := ms.View(func(tx *Tx) error {
		if _, _, _, err := tx.GetInfo("ok"); err != nil {
			return err
		}
		if _, _, _, err := tx.GetInfo("bad"); !errdefs.IsNotFound(err) {
			t.Errorf("record of the failed call: %v, want NotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestSnapshotsDirSpreadsSubdirs: on ext2/3/4 the snapshots directory
// carries FS_TOPDIR_FL, so that ext4 places each snapshot in a block group
// of its own.
func TestSnapshotsDirSpreadsSubdirs(t *testing.T) {
	root := t.TempDir()
	s, err := New(root, &blockingDriver{layout: Layout(root)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	// ext2 and ext3 share the magic; the flag is theirs
	testutil.Require(t, st.Type == unix.EXT4_SUPER_MAGIC, "a temporary directory on ext2/3/4")
	f, err := os.Open(s.Layout().Snapshots())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&fsTopdirFlag == 0 {
		t.Errorf("flags of %s = %#x, want FS_TOPDIR_FL (%#x) set", s.Layout().Snapshots(), flags, fsTopdirFlag)
	}
}

// A record whose directory a machine crash lost (its creation never
// returned) is dropped when the snapshotter is opened again.
func TestNewDropsRecordsWithoutDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openPassing(t, root)
	for _, k := range []string{"lost", "kept"} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := s.Mounts(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(ms[0].Source)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openPassing(t, root)
	defer s.Close()
	if _, err := s.Stat(ctx, "lost"); !errdefs.IsNotFound(err) {
		t.Errorf("record of a lost directory: %v, want NotFound", err)
	}
	if _, err := s.Stat(ctx, "kept"); err != nil {
		t.Errorf("record with its directory: %v", err)
	}
}
