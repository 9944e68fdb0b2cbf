// Package testsuite is the conformance suite every snapshots.Snapshotter
// of berth runs: containerd's snapshotter suite (layer chains checked
// through real mounts, stat, update, removal rules, views, walk filters,
// 128-layer chains) plus what berth promises besides (errdefs classes,
// client keys that are not paths, usage, cleanup of orphans, reopening,
// preservation of file metadata, concurrent use).
//
// A snapshotter runs it from its own tests:
//
//	testsuite.Run(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, error) {
//		return overlay.New(root)
//	})
//
// Each case gets a fresh root; new may be called again on the same root
// (to check reopening) after the previous snapshotter is closed. The
// suite mounts snapshots, so it needs root (skipped without it, failed
// under CI=true). The cleanup case relies on package storage's layout
// (storage.Layout), which both snapshotters share.
package testsuite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/storage"
	"github.com/berth-dev/berth/internal/testutil"
)

// NewFunc opens the snapshotter under test on root.
type NewFunc func(ctx context.Context, root string) (snapshots.Snapshotter, error)

// env is what each case gets.
type env struct {
	ctx  context.Context
	sn   snapshots.Snapshotter
	root string // the snapshotter's root
	work string // room for mount points and plain trees
	new  NewFunc
}

var gcRoot = snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)})

// Run runs the suite, each case as a parallel subtest.
func Run(t *testing.T, name string, newSnapshotter NewFunc) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"Basic", testBasic},
		{"StatActive", testStatActive},
		{"StatCommitted", testStatCommitted},
		{"Transitivity", testTransitivity},
		{"KeysTaken", testKeysTaken},
		{"Errors", testErrors},
		{"Update", testUpdate},
		{"Remove", testRemove},
		{"RemoveIntermediate", testRemoveIntermediate},
		{"ClientKeys", testClientKeys},
		{"LayerFileUpdate", testLayerFileUpdate},
		{"DeletedFilesInChild", testDeletedFilesInChild},
		{"RemoveDirectoryInLowerLayer", testRemoveDirectoryInLowerLayer},
		{"MoveFileFromLowerLayer", testMoveFileFromLowerLayer},
		{"Preserve", testPreserve},
		{"SiblingsIsolated", testSiblingsIsolated},
		{"ViewReadonly", testViewReadonly},
		{"RootPermission", testRootPermission},
		{"128LayersMount", test128Layers},
		{"Walk", testWalk},
		{"WalkCallsBack", testWalkCallsBack},
		{"Usage", testUsage},
		{"Cleanup", testCleanup},
		{"OrphanAtNextID", testOrphanAtNextID},
		{"Reopen", testReopen},
		{"CloseTwice", testCloseTwice},
		{"Concurrent", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			e := &env{
				ctx:  context.Background(),
				root: filepath.Join(dir, "root"),
				work: filepath.Join(dir, "work"),
				new:  newSnapshotter,
			}
			if err := os.Mkdir(e.work, 0o755); err != nil {
				t.Fatal(err)
			}
			sn, err := newSnapshotter(e.ctx, e.root)
			if err != nil {
				t.Fatalf("open %s snapshotter: %v", name, err)
			}
			e.sn = sn
			t.Cleanup(func() {
				if err := e.sn.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, e)
		})
	}
}

// mountAt mounts ms on a new directory work/name and returns it. The
// mounts are undone at the end of the test, or earlier by unmount.
func (e *env) mountAt(t *testing.T, name string, ms []mount.Mount) string {
	t.Helper()
	if len(ms) == 0 {
		t.Fatalf("%s: no mounts", name)
	}
	dir := filepath.Join(e.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mount.All(ms, dir); err != nil {
		t.Fatalf("mount %s: %v", name, err)
	}
	t.Cleanup(func() { mount.UnmountAll(dir, 0) })
	return dir
}

func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := mount.UnmountAll(dir, 0); err != nil {
		t.Fatalf("unmount %s: %v", dir, err)
	}
}

// prepareApply prepares key on parent, applies a through its mounts and
// unmounts it again.
func (e *env) prepareApply(t *testing.T, key, parent string, a applier) {
	t.Helper()
	ms, err := e.sn.Prepare(e.ctx, key, parent, gcRoot)
	if err != nil {
		t.Fatalf("prepare %q on %q: %v", key, parent, err)
	}
	dir := e.mountAt(t, "m-"+sanitize(key), ms)
	if err := a(dir); err != nil {
		t.Fatalf("apply to %q: %v", key, err)
	}
	unmount(t, dir)
}

// layer prepares key on parent, applies a and commits it as name.
func (e *env) layer(t *testing.T, name, key, parent string, a applier) {
	t.Helper()
	e.prepareApply(t, key, parent, a)
	if err := e.sn.Commit(e.ctx, name, key, gcRoot); err != nil {
		t.Fatalf("commit %q as %q: %v", key, name, err)
	}
}

// checkView views parent and compares its contents with the tree at want.
func (e *env) checkView(t *testing.T, key, parent, want string) {
	t.Helper()
	ms, err := e.sn.View(e.ctx, key, parent)
	if err != nil {
		t.Fatalf("view %q of %q: %v", key, parent, err)
	}
	dir := e.mountAt(t, "v-"+sanitize(key), ms)
	if err := compareTrees(want, dir, false); err != nil {
		t.Error(err)
	}
	unmount(t, dir)
	if err := e.sn.Remove(e.ctx, key); err != nil {
		t.Fatalf("remove view %q: %v", key, err)
	}
}

// flat makes a plain directory with the layers applied in order.
func (e *env) flat(t *testing.T, name string, as ...applier) string {
	t.Helper()
	dir := filepath.Join(e.work, "flat-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := apply(as...)(dir); err != nil {
		t.Fatalf("apply to plain directory: %v", err)
	}
	return dir
}

// checkLayers stacks the layers, checking each active snapshot against a
// plain directory with the same changes before and after applying its
// layer, and a view of the top at the end.
func (e *env) checkLayers(t *testing.T, layers ...applier) {
	t.Helper()
	flat := e.flat(t, "layers")
	parent := ""
	for i, a := range layers {
		key, name := fmt.Sprintf("active-%d", i), fmt.Sprintf("committed-%d", i)
		ms, err := e.sn.Prepare(e.ctx, key, parent, gcRoot)
		if err != nil {
			t.Fatalf("layer %d: prepare: %v", i, err)
		}
		dir := e.mountAt(t, key, ms)
		if err := compareTrees(flat, dir, false); err != nil {
			t.Fatalf("layer %d before applying: %v", i, err)
		}
		if err := a(flat); err != nil {
			t.Fatalf("layer %d: apply to plain directory: %v", i, err)
		}
		if err := a(dir); err != nil {
			t.Fatalf("layer %d: apply: %v", i, err)
		}
		if err := compareTrees(flat, dir, false); err != nil {
			t.Fatalf("layer %d after applying: %v", i, err)
		}
		unmount(t, dir)
		if err := e.sn.Commit(e.ctx, name, key, gcRoot); err != nil {
			t.Fatalf("layer %d: commit: %v", i, err)
		}
		parent = name
	}
	e.checkView(t, "top-view", parent, flat)
}

// sanitize makes a directory name for a mount point from a key.
func sanitize(key string) string {
	s := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, key)
	return s[:min(len(s), 60)]
}

func wantErr(t *testing.T, what string, err error, class func(error) bool, className string) {
	t.Helper()
	if err == nil || !class(err) {
		t.Errorf("%s: got %v, want %s", what, err, className)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testBasic(t *testing.T, e *env) {
	initial := apply(
		createFile("foo", "foo\n", 0o777),
		createDir("a", 0o755),
		createDir("a/b", 0o755),
		createDir("a/b/c", 0o755),
	)
	diff := apply(
		createFile("bar", "bar\n", 0o777),
		createFile("foo", "bar\n", 0o777),
		removeAll("a/b"),
	)

	e.prepareApply(t, "preparing", "", initial)
	must(t, e.sn.Commit(e.ctx, "committed", "preparing", gcRoot))
	si, err := e.sn.Stat(e.ctx, "committed")
	must(t, err)
	if si.Name != "committed" || si.Parent != "" || si.Kind != snapshots.KindCommitted {
		t.Errorf("stat committed = %+v", si)
	}
	if _, err := e.sn.Stat(e.ctx, "preparing"); !errdefs.IsNotFound(err) {
		t.Errorf("stat of a committed active's key: %v, want NotFound", err)
	}

	ms, err := e.sn.Prepare(e.ctx, "next", "committed", gcRoot)
	must(t, err)
	next := e.mountAt(t, "next", ms)
	if err := compareTrees(e.flat(t, "initial", initial), next, false); err != nil {
		t.Fatal(err)
	}
	must(t, diff(next))
	unmount(t, next)

	ni, err := e.sn.Stat(e.ctx, "next")
	must(t, err)
	if ni.Parent != "committed" || ni.Kind != snapshots.KindActive {
		t.Errorf("stat next = %+v", ni)
	}
	must(t, e.sn.Commit(e.ctx, "committed-next", "next", gcRoot))
	si2, err := e.sn.Stat(e.ctx, "committed-next")
	must(t, err)
	if si2.Parent != "committed" || si2.Kind != snapshots.KindCommitted {
		t.Errorf("stat committed-next = %+v", si2)
	}

	walked := map[string]snapshots.Info{}
	must(t, e.sn.Walk(e.ctx, func(_ context.Context, info snapshots.Info) error {
		walked[info.Name] = info
		return nil
	}))
	if len(walked) != 2 {
		t.Errorf("walk found %d snapshots, want 2", len(walked))
	}
	for _, want := range []snapshots.Info{si, si2} {
		if got := walked[want.Name]; !equalInfo(got, want) {
			t.Errorf("walk gives %+v, stat %+v", got, want)
		}
	}

	ms, err = e.sn.View(e.ctx, "nextnext", "committed-next", gcRoot)
	must(t, err)
	view := e.mountAt(t, "nextnext", ms)
	if err := compareTrees(e.flat(t, "both", initial, diff), view, false); err != nil {
		t.Error(err)
	}
	unmount(t, view)
	must(t, e.sn.Remove(e.ctx, "nextnext"))

	err = e.sn.Remove(e.ctx, "committed")
	wantErr(t, "remove of a parent", err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	must(t, e.sn.Remove(e.ctx, "committed-next"))
	must(t, e.sn.Remove(e.ctx, "committed"))
}

func equalInfo(a, b snapshots.Info) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Parent == b.Parent &&
		a.Created.Equal(b.Created) && a.Updated.Equal(b.Updated) &&
		len(a.Labels) == len(b.Labels) && func() bool {
		for k, v := range a.Labels {
			if w, ok := b.Labels[k]; !ok || w != v {
				return false
			}
		}
		return true
	}()
}

func testStatActive(t *testing.T, e *env) {
	e.prepareApply(t, "preparing", "", createFile("foo", "foo\n", 0o644))
	si, err := e.sn.Stat(e.ctx, "preparing")
	must(t, err)
	if si.Name != "preparing" || si.Kind != snapshots.KindActive || si.Parent != "" {
		t.Errorf("stat = %+v", si)
	}
	if si.Labels["containerd.io/gc.root"] == "" {
		t.Errorf("labels = %v, want the gc.root label", si.Labels)
	}
	if si.Created.Location() != time.UTC || si.Created.IsZero() || !si.Created.Equal(si.Updated) {
		t.Errorf("created %v, updated %v: want equal, UTC", si.Created, si.Updated)
	}
}

func testStatCommitted(t *testing.T, e *env) {
	e.layer(t, "committed", "preparing", "", createFile("foo", "foo\n", 0o644))
	si, err := e.sn.Stat(e.ctx, "committed")
	must(t, err)
	if si.Name != "committed" || si.Kind != snapshots.KindCommitted || si.Parent != "" {
		t.Errorf("stat = %+v", si)
	}
}

// A file of the grandparent shows through the parent in the child.
func testTransitivity(t *testing.T, e *env) {
	e.layer(t, "A", "a", "", createFile("foo", "foo\n", 0o644))
	e.layer(t, "B", "b", "A", createFile("bar", "bar\n", 0o644))
	ms, err := e.sn.Prepare(e.ctx, "c", "B")
	must(t, err)
	dir := e.mountAt(t, "c", ms)
	for f, want := range map[string]string{"foo": "foo\n", "bar": "bar\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != want {
			t.Errorf("%s in the grandchild: %q, %v", f, b, err)
		}
	}
	siB, err := e.sn.Stat(e.ctx, "B")
	must(t, err)
	siA, err := e.sn.Stat(e.ctx, siB.Parent)
	must(t, err)
	if siB.Parent != "A" || siA.Parent != "" {
		t.Errorf("parents: B's %q, A's %q", siB.Parent, siA.Parent)
	}
}

func testKeysTaken(t *testing.T, e *env) {
	e.layer(t, "base", "base-a", "", createFile("f", "x", 0o644))
	_, err := e.sn.Prepare(e.ctx, "k", "base")
	must(t, err)
	_, err = e.sn.Prepare(e.ctx, "k", "base")
	wantErr(t, "prepare twice", err, errdefs.IsAlreadyExists, "AlreadyExists")
	_, err = e.sn.View(e.ctx, "k", "base")
	wantErr(t, "view on an active's key", err, errdefs.IsAlreadyExists, "AlreadyExists")
	_, err = e.sn.View(e.ctx, "v", "base")
	must(t, err)
	_, err = e.sn.View(e.ctx, "v", "")
	wantErr(t, "view twice", err, errdefs.IsAlreadyExists, "AlreadyExists")
	_, err = e.sn.Prepare(e.ctx, "base", "")
	wantErr(t, "prepare on a committed name", err, errdefs.IsAlreadyExists, "AlreadyExists")

	_, err = e.sn.Prepare(e.ctx, "k2", "base")
	must(t, err)
	for _, name := range []string{"base", "k", "v"} {
		err = e.sn.Commit(e.ctx, name, "k2")
		wantErr(t, "commit to the taken name "+name, err, errdefs.IsAlreadyExists, "AlreadyExists")
	}
	// A failed commit leaves the active snapshot as it was.
	si, err := e.sn.Stat(e.ctx, "k2")
	must(t, err)
	if si.Kind != snapshots.KindActive {
		t.Errorf("after failed commits k2 is %s", si.Kind)
	}
	// After a commit the key is free again.
	must(t, e.sn.Commit(e.ctx, "c2", "k2"))
	_, err = e.sn.Prepare(e.ctx, "k2", "c2")
	must(t, err)
}

func testErrors(t *testing.T, e *env) {
	e.layer(t, "c", "c-a", "", createFile("f", "x", 0o644))
	_, err := e.sn.Prepare(e.ctx, "active", "c")
	must(t, err)
	_, err = e.sn.View(e.ctx, "view", "c")
	must(t, err)
	big := snapshots.WithLabels(map[string]string{"k": strings.Repeat("v", 4096)})

	inval, notFound, precond := errdefs.IsInvalidArgument, errdefs.IsNotFound, errdefs.IsFailedPrecondition
	for _, tc := range []struct {
		what  string
		err   func() error
		class func(error) bool
		name  string
	}{
		{"prepare with an empty key", func() error { _, err := e.sn.Prepare(e.ctx, "", ""); return err }, inval, "InvalidArgument"},
		{"view with an empty key", func() error { _, err := e.sn.View(e.ctx, "", "c"); return err }, inval, "InvalidArgument"},
		{"commit to an empty name", func() error { return e.sn.Commit(e.ctx, "", "active") }, inval, "InvalidArgument"},
		{"prepare with an oversized label", func() error { _, err := e.sn.Prepare(e.ctx, "x", "", big); return err }, inval, "InvalidArgument"},
		{"commit with an oversized label", func() error { return e.sn.Commit(e.ctx, "x", "active", big) }, inval, "InvalidArgument"},
		{"prepare on a missing parent", func() error { _, err := e.sn.Prepare(e.ctx, "x", "missing"); return err }, notFound, "NotFound"},
		{"view on a missing parent", func() error { _, err := e.sn.View(e.ctx, "x", "missing"); return err }, notFound, "NotFound"},
		{"prepare on an active parent", func() error { _, err := e.sn.Prepare(e.ctx, "x", "active"); return err }, inval, "InvalidArgument"},
		{"prepare on a view parent", func() error { _, err := e.sn.Prepare(e.ctx, "x", "view"); return err }, inval, "InvalidArgument"},
		{"commit of a view", func() error { return e.sn.Commit(e.ctx, "x", "view") }, precond, "FailedPrecondition"},
		{"commit of a committed snapshot", func() error { return e.sn.Commit(e.ctx, "x", "c") }, precond, "FailedPrecondition"},
		{"commit of a missing key", func() error { return e.sn.Commit(e.ctx, "x", "missing") }, notFound, "NotFound"},
		{"mounts of a committed snapshot", func() error { _, err := e.sn.Mounts(e.ctx, "c"); return err }, precond, "FailedPrecondition"},
		{"mounts of a missing key", func() error { _, err := e.sn.Mounts(e.ctx, "missing"); return err }, notFound, "NotFound"},
		{"stat of a missing key", func() error { _, err := e.sn.Stat(e.ctx, "missing"); return err }, notFound, "NotFound"},
		{"stat of the empty key", func() error { _, err := e.sn.Stat(e.ctx, ""); return err }, notFound, "NotFound"},
		{"usage of a missing key", func() error { _, err := e.sn.Usage(e.ctx, "missing"); return err }, notFound, "NotFound"},
		{"remove of a missing key", func() error { return e.sn.Remove(e.ctx, "missing") }, notFound, "NotFound"},
		{"update of a missing key", func() error { _, err := e.sn.Update(e.ctx, snapshots.Info{Name: "missing"}); return err }, notFound, "NotFound"},
		{"update of the parent", func() error {
			_, err := e.sn.Update(e.ctx, snapshots.Info{Name: "active", Parent: "x"}, "parent")
			return err
		}, inval, "InvalidArgument"},
		{"update with an oversized label", func() error {
			_, err := e.sn.Update(e.ctx, snapshots.Info{Name: "active", Labels: map[string]string{"k": strings.Repeat("v", 4096)}})
			return err
		}, inval, "InvalidArgument"},
		{"walk with a bad filter", func() error {
			return e.sn.Walk(e.ctx, func(context.Context, snapshots.Info) error { return nil }, "kind==")
		}, inval, "InvalidArgument"},
		{"remove of a parent", func() error { return e.sn.Remove(e.ctx, "c") }, precond, "FailedPrecondition"},
	} {
		wantErr(t, tc.what, tc.err(), tc.class, tc.name)
	}
	// Nothing of the failures was recorded.
	var n int
	must(t, e.sn.Walk(e.ctx, func(context.Context, snapshots.Info) error { n++; return nil }))
	if n != 3 {
		t.Errorf("%d snapshots after the failures, want 3", n)
	}
	// Mounts of an active or view gives what Prepare or View gave.
	for _, key := range []string{"active", "view"} {
		ms, err := e.sn.Mounts(e.ctx, key)
		if err != nil || len(ms) == 0 {
			t.Errorf("mounts of %s: %v, %v", key, ms, err)
		}
	}
}

func testUpdate(t *testing.T, e *env) {
	t1 := time.Now().UTC()
	e.layer(t, "c1", "c1-a", "", apply())
	e.layer(t, "c2", "c2-a", "c1", apply())
	for _, k := range []struct{ key, parent string }{{"a1", "c2"}, {"a2", ""}} {
		_, err := e.sn.Prepare(e.ctx, k.key, k.parent, gcRoot)
		must(t, err)
	}
	for _, k := range []struct{ key, parent string }{{"v1", "c2"}, {"v2", ""}} {
		_, err := e.sn.View(e.ctx, k.key, k.parent, gcRoot)
		must(t, err)
	}
	t2 := time.Now().UTC()

	for _, tc := range []struct {
		name, parent string
		kind         snapshots.Kind
	}{
		{"c1", "", snapshots.KindCommitted},
		{"c2", "c1", snapshots.KindCommitted},
		{"a1", "c2", snapshots.KindActive},
		{"a2", "", snapshots.KindActive},
		{"v1", "c2", snapshots.KindView},
		{"v2", "", snapshots.KindView},
	} {
		st, err := e.sn.Stat(e.ctx, tc.name)
		must(t, err)
		if st.Created.Before(t1) || st.Created.After(t2) || !st.Created.Equal(st.Updated) {
			t.Errorf("%s: created %v updated %v, want equal and between %v and %v", tc.name, st.Created, st.Updated, t1, t2)
		}
		if st.Kind != tc.kind || st.Parent != tc.parent || st.Name != tc.name {
			t.Errorf("%s: stat %+v", tc.name, st)
		}
		created := st.Created
		root := time.Now().UTC().Format(time.RFC3339)
		want := map[string]string{"l1": "v1", "l2": "v2", "l3": "v3", "containerd.io/gc.root": root}
		st.Parent = "doesnotexist"
		st.Labels = want
		u1 := time.Now().UTC()
		st, err = e.sn.Update(e.ctx, st)
		must(t, err)
		u2 := time.Now().UTC()
		if !st.Created.Equal(created) || st.Updated.Before(u1) || st.Updated.After(u2) {
			t.Errorf("%s: after update created %v updated %v", tc.name, st.Created, st.Updated)
		}
		if st.Kind != tc.kind || st.Parent != tc.parent || st.Name != tc.name {
			t.Errorf("%s: update changed more than labels: %+v", tc.name, st)
		}
		checkLabels(t, tc.name, st.Labels, want)

		st.Labels = map[string]string{"l1": "updated", "l4": "v4"}
		st, err = e.sn.Update(e.ctx, st, "labels.l1", "labels.l2")
		must(t, err)
		checkLabels(t, tc.name, st.Labels, map[string]string{"l1": "updated", "l3": "v3", "containerd.io/gc.root": root})

		want = map[string]string{"l4": "v4", "containerd.io/gc.root": root}
		st.Labels = want
		st, err = e.sn.Update(e.ctx, st, "labels")
		must(t, err)
		checkLabels(t, tc.name, st.Labels, want)

		// An empty value removes the label.
		st.Labels = map[string]string{"l4": ""}
		st, err = e.sn.Update(e.ctx, st, "labels.l4")
		must(t, err)
		checkLabels(t, tc.name, st.Labels, map[string]string{"containerd.io/gc.root": root})

		got, err := e.sn.Stat(e.ctx, tc.name)
		must(t, err)
		if !equalInfo(got, st) {
			t.Errorf("%s: stat after update %+v, update returned %+v", tc.name, got, st)
		}
		st.Parent = "doesnotexist"
		_, err = e.sn.Update(e.ctx, st, "parent")
		wantErr(t, tc.name+": update of parent", err, errdefs.IsInvalidArgument, "InvalidArgument")
	}
}

func checkLabels(t *testing.T, name string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: labels %v, want %v", name, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: labels %v, want %v", name, got, want)
			return
		}
	}
}

func testRemove(t *testing.T, e *env) {
	_, err := e.sn.Prepare(e.ctx, "committed-a", "", gcRoot)
	must(t, err)
	must(t, e.sn.Commit(e.ctx, "committed-1", "committed-a", gcRoot))
	_, err = e.sn.Prepare(e.ctx, "reuse-1", "committed-1", gcRoot)
	must(t, err)
	must(t, e.sn.Remove(e.ctx, "reuse-1"))
	_, err = e.sn.View(e.ctx, "reuse-1", "committed-1", gcRoot)
	must(t, err)
	wantErr(t, "remove of a view's parent", e.sn.Remove(e.ctx, "committed-1"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	must(t, e.sn.Remove(e.ctx, "reuse-1"))
	_, err = e.sn.Prepare(e.ctx, "reuse-1", "", gcRoot)
	must(t, err)
	must(t, e.sn.Remove(e.ctx, "committed-1"))
	must(t, e.sn.Commit(e.ctx, "committed-1", "reuse-1", gcRoot))
	wantErr(t, "remove twice", e.sn.Remove(e.ctx, "reuse-1"), errdefs.IsNotFound, "NotFound")
}

func testRemoveIntermediate(t *testing.T, e *env) {
	e.layer(t, "base", "base-a", "", createFile("f", "x", 0o644))
	e.layer(t, "inter", "inter-a", "base", createFile("g", "y", 0o644))
	_, err := e.sn.Prepare(e.ctx, "top", "inter", gcRoot)
	must(t, err)
	wantErr(t, "remove of the intermediate", e.sn.Remove(e.ctx, "inter"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	wantErr(t, "remove of the base", e.sn.Remove(e.ctx, "base"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	// The failures changed nothing: the top still mounts with both layers.
	ms, err := e.sn.Mounts(e.ctx, "top")
	must(t, err)
	dir := e.mountAt(t, "top", ms)
	if err := compareTrees(e.flat(t, "fg", createFile("f", "x", 0o644), createFile("g", "y", 0o644)), dir, false); err != nil {
		t.Error(err)
	}
	unmount(t, dir)
	for _, k := range []string{"top", "inter", "base"} {
		must(t, e.sn.Remove(e.ctx, k))
	}
}

// Keys are client strings: spaces, slashes, dots, anything. None of them
// touches a path.
func testClientKeys(t *testing.T, e *env) {
	keys := []string{
		"extract-1700000000123456789-AbCd sha256:3d0c6f5ac5ad2b2b3b0aa4f1b1ba3b2c5f0e8bd4ba4c3a6f5f2b1e0d9c8b7a6f",
		"/var/lib/berth/rootfs",
		"../../../../../../tmp/escape",
		"a/b/../c",
		".",
		"default/12/sha256:abc",
		"ünïcödé ☃",
		"tab\tnewline\nnul\x00end",
		strings.Repeat("long", 1000),
	}
	parent := ""
	var as []applier
	for i, key := range keys {
		name := "committed " + key
		a := createFile(fmt.Sprintf("f%d", i), key, 0o644)
		as = append(as, a)
		e.layer(t, name, key, parent, a)
		si, err := e.sn.Stat(e.ctx, name)
		must(t, err)
		if si.Name != name || si.Parent != parent {
			t.Errorf("stat %q = %+v", name, si)
		}
		parent = name
	}
	e.checkView(t, "view "+keys[0], parent, e.flat(t, "keys", as...))
	var names []string
	must(t, e.sn.Walk(e.ctx, func(_ context.Context, si snapshots.Info) error {
		names = append(names, si.Name)
		return nil
	}, `parent=="committed `+keys[0]+`"`))
	if len(names) != 1 || names[0] != "committed "+keys[1] {
		t.Errorf("walk by parent found %q", names)
	}
	if _, err := os.Lstat("/tmp/escape"); err == nil {
		t.Error("a key became the path /tmp/escape")
	}
	for dir, want := range map[string]int{filepath.Dir(e.root): 2, e.root: 2} {
		entries, err := os.ReadDir(dir)
		must(t, err)
		if len(entries) != want {
			t.Errorf("%s holds %v, want %d entries", dir, entries, want)
		}
	}
}

func testLayerFileUpdate(t *testing.T, e *env) {
	e.checkLayers(t,
		apply(
			createDir("etc", 0o755),
			createFile("etc/hosts", "mydomain 10.0.0.1", 0o644),
			createFile("etc/profile", "PATH=/usr/bin", 0o644),
		),
		apply(
			createFile("etc/hosts", "mydomain 10.0.0.2", 0o644),
			chmod("etc/profile", 0o600),
			chown("etc/profile", 1000, 1000),
			createDir("root", 0o700),
			createFile("root/.bashrc", "PATH=/usr/sbin:/usr/bin", 0o644),
		),
		apply(
			createFile("etc/hosts", "mydomain 10.0.0.3", 0o644),
			createFile("etc/profile", "PATH=/usr/bin:/bin", 0o644),
			chmod("etc", 0o750),
		),
	)
}

func testDeletedFilesInChild(t *testing.T, e *env) {
	e.checkLayers(t,
		apply(createFile("foo", "foo\n", 0o777), createFile("foobar", "foobar\n", 0o777)),
		removeAll("foobar"),
		apply(),
	)
}

// A directory of a lower layer removed (and made anew, without its old
// contents) in an upper one.
func testRemoveDirectoryInLowerLayer(t *testing.T, e *env) {
	e.checkLayers(t,
		apply(
			createDir("lib", 0o700),
			createDir("lib/dir", 0o755),
			createFile("lib/dir/a", "a", 0o644),
			createFile("lib/dir/b", "b", 0o644),
			createFile("lib/keep", "keep", 0o644),
		),
		removeAll("lib/dir"),
		apply(createDir("lib/dir", 0o711), createFile("lib/dir/c", "c", 0o644)),
		apply(removeAll("lib"), createFile("lib", "now a file", 0o600)),
	)
}

func testMoveFileFromLowerLayer(t *testing.T, e *env) {
	e.checkLayers(t,
		apply(
			createDir("dir1", 0o700),
			createFile("dir1/f1", "Hello", 0o644),
			createDir("dir2", 0o700),
			createFile("dir2/f2", "...", 0o644),
			createFile("dir2/f3", "moved", 0o600),
		),
		apply(
			createDir("dir3", 0o700),
			createFile("dir3/f1", "Hello", 0o644),
			removeAll("dir1"),
			link("dir2/f2", "dir3/f2"),
			removeAll("dir2/f2"),
			rename("dir2/f3", "dir3/f3"),
		),
	)
}

// File metadata survives layering: owners, set-id and sticky bits, hard
// links, symlinks, devices, FIFOs, xattrs, times.
func testPreserve(t *testing.T, e *env) {
	const when = 1_600_000_000
	layer := apply(
		createFile("setuid", "#!/bin/sh\n", 0o755),
		chown("setuid", 1234, 5678),
		chmod("setuid", 0o4755),
		createDir("private", 0o700),
		chown("private", 1, 2),
		createDir("tmp", 0o777),
		chmod("tmp", 0o1777),
		createFile("tmp/hard1", "linked", 0o640),
		link("tmp/hard1", "tmp/hard2"),
		symlink("../setuid", "tmp/sym"),
		chown("tmp/sym", 42, 43),
		mknod("tmp/fifo", unix.S_IFIFO|0o620, 0),
		mknod("tmp/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))),
		setxattr("setuid", "user.berth", "value"),
		setxattr("private", "user.dir", "x"),
		chtimes("tmp/hard1", when, 123),
		chtimes("tmp/sym", when+1, 0),
		chtimes("tmp/fifo", when+2, 0),
		chtimes("tmp/null", when+3, 0),
		chtimes("setuid", when+4, 0),
		chtimes("private", when+5, 0),
		chtimes("tmp", when+6, 0),
	)
	e.layer(t, "base", "base-a", "", layer)
	flat := e.flat(t, "preserve", layer)

	ms, err := e.sn.Prepare(e.ctx, "child", "base")
	must(t, err)
	dir := e.mountAt(t, "child", ms)
	if err := compareTrees(flat, dir, true); err != nil {
		t.Error(err)
	}
	// Changing the child leaves the parent alone.
	must(t, createFile("tmp/hard1", "changed", 0o600)(dir))
	must(t, removeAll("private")(dir))
	unmount(t, dir)
	e.checkView(t, "base-view", "base", flat)
}

func testSiblingsIsolated(t *testing.T, e *env) {
	e.layer(t, "base", "base-a", "", createFile("shared", "base", 0o644))
	e.prepareApply(t, "one", "base", apply(createFile("shared", "one", 0o644), createFile("only-one", "1", 0o644)))
	ms, err := e.sn.Prepare(e.ctx, "two", "base")
	must(t, err)
	dir := e.mountAt(t, "two", ms)
	if err := compareTrees(e.flat(t, "base", createFile("shared", "base", 0o644)), dir, false); err != nil {
		t.Error(err)
	}
}

func testViewReadonly(t *testing.T, e *env) {
	e.layer(t, "l1", "l1-a", "", createFile("f1", "1", 0o644))
	e.layer(t, "l2", "l2-a", "l1", createFile("f2", "2", 0o644))
	e.layer(t, "l3", "l3-a", "l2", createFile("f3", "3", 0o644))
	for _, tc := range []struct{ key, parent string }{{"v0", ""}, {"v1", "l1"}, {"v3", "l3"}} {
		ms, err := e.sn.View(e.ctx, tc.key, tc.parent, gcRoot)
		must(t, err)
		again, err := e.sn.Mounts(e.ctx, tc.key)
		must(t, err)
		if fmt.Sprint(again) != fmt.Sprint(ms) {
			t.Errorf("%s: Mounts %v, View gave %v", tc.key, again, ms)
		}
		dir := e.mountAt(t, tc.key, ms)
		err = os.WriteFile(filepath.Join(dir, "testfile"), []byte("x"), 0o644)
		if err == nil {
			t.Errorf("%s: write in a view succeeded", tc.key)
		}
		if tc.parent != "" {
			err = os.Remove(filepath.Join(dir, "f1"))
			if err == nil {
				t.Errorf("%s: removing a file in a view succeeded", tc.key)
			}
		}
		unmount(t, dir)
		si, err := e.sn.Stat(e.ctx, tc.key)
		must(t, err)
		if si.Kind != snapshots.KindView {
			t.Errorf("%s is %s", tc.key, si.Kind)
		}
		must(t, e.sn.Remove(e.ctx, tc.key))
	}
}

func testRootPermission(t *testing.T, e *env) {
	ms, err := e.sn.Prepare(e.ctx, "preparing", "", gcRoot)
	must(t, err)
	dir := e.mountAt(t, "preparing", ms)
	st, err := os.Stat(dir)
	must(t, err)
	if mode := st.Mode() & 0o777; mode != 0o755 {
		t.Errorf("root of a new snapshot has mode %#o, want 0755", mode)
	}
}

func test128Layers(t *testing.T, e *env) {
	layers := []applier{apply(
		createFile("bottom", "way at the bottom\n", 0o777),
		createFile("overwriteme", "FIRST!\n", 0o777),
		createDir("addhere", 0o755),
		createDir("onlyme", 0o755),
		createFile("onlyme/bottom", "bye!\n", 0o777),
	)}
	for i := 1; i < 128; i++ {
		layers = append(layers, apply(
			createFile("overwriteme", fmt.Sprintf("%d WAS HERE!\n", i), 0o777),
			createFile(fmt.Sprintf("addhere/file-%d", i), "same\n", 0o755),
			removeAll("onlyme"),
			createDir("onlyme", 0o755),
			createFile(fmt.Sprintf("onlyme/file-%d", i), "only me!\n", 0o777),
		))
	}
	e.checkLayers(t, layers...)
}

func testWalk(t *testing.T, e *env) {
	root := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "check-walk"})
	with := func(l string) snapshots.Opt {
		return snapshots.WithLabels(map[string]string{"l": l, "containerd.io/gc.root": "check-walk"})
	}
	steps := []func() error{
		func() error { _, err := e.sn.Prepare(e.ctx, "a-np", "", root); return err },
		func() error { _, err := e.sn.Prepare(e.ctx, "p-tmp", "", root); return err },
		func() error { return e.sn.Commit(e.ctx, "p", "p-tmp", root) },
		func() error { _, err := e.sn.Prepare(e.ctx, "a", "p", root); return err },
		func() error { _, err := e.sn.View(e.ctx, "v", "p", root); return err },
		func() error { _, err := e.sn.Prepare(e.ctx, "p-wl-tmp", "", root); return err },
		func() error { return e.sn.Commit(e.ctx, "p-wl", "p-wl-tmp", with("1")) },
		func() error { _, err := e.sn.Prepare(e.ctx, "a-wl", "p-wl", with("2")); return err },
		func() error { _, err := e.sn.View(e.ctx, "v-wl", "p-wl", with("3")); return err },
		func() error { _, err := e.sn.Prepare(e.ctx, "a-np-wl", "", with("2")); return err },
	}
	for _, s := range steps {
		must(t, s())
	}
	for _, tc := range []struct {
		filters []string
		matches []string
	}{
		{nil, []string{"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}},
		{[]string{`labels."containerd.io/gc.root"==check-walk`}, []string{"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}},
		{[]string{`kind==active,labels."containerd.io/gc.root"==check-walk`}, []string{"a-np", "a", "a-wl", "a-np-wl"}},
		{[]string{"kind==view"}, []string{"v", "v-wl"}},
		{[]string{"kind==committed"}, []string{"p", "p-wl"}},
		{[]string{"name==p", "name==a-np-wl"}, []string{"p", "a-np-wl"}},
		{[]string{"name==a-wl,labels.l"}, []string{"a-wl"}},
		{[]string{"parent==p"}, []string{"a", "v"}},
		{[]string{`parent!="",labels."containerd.io/gc.root"==check-walk`}, []string{"a", "v", "a-wl", "v-wl"}},
		{[]string{"labels.l"}, []string{"p-wl", "a-wl", "v-wl", "a-np-wl"}},
		{[]string{"labels.l==2"}, []string{"a-wl", "a-np-wl"}},
		{[]string{"name~=^a-"}, []string{"a-np", "a-wl", "a-np-wl"}},
		{[]string{"labels.missing==x"}, nil},
	} {
		var got []string
		must(t, e.sn.Walk(e.ctx, func(_ context.Context, si snapshots.Info) error {
			got = append(got, si.Name)
			return nil
		}, tc.filters...))
		slices.Sort(got)
		slices.Sort(tc.matches)
		if !slices.Equal(got, tc.matches) {
			t.Errorf("walk %q = %q, want %q", tc.filters, got, tc.matches)
		}
	}
	// An error from fn stops the walk and is returned.
	stop := errors.New("stop")
	var n int
	err := e.sn.Walk(e.ctx, func(context.Context, snapshots.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("walk with a failing fn: %v after %d calls", err, n)
	}
}

// fn may call the snapshotter, even to change it.
func testWalkCallsBack(t *testing.T, e *env) {
	for i := range 5 {
		_, err := e.sn.Prepare(e.ctx, fmt.Sprintf("a%d", i), "")
		must(t, err)
	}
	must(t, e.sn.Walk(e.ctx, func(ctx context.Context, si snapshots.Info) error {
		if _, err := e.sn.Stat(ctx, si.Name); err != nil {
			return err
		}
		return e.sn.Remove(ctx, si.Name)
	}))
	must(t, e.sn.Walk(e.ctx, func(_ context.Context, si snapshots.Info) error {
		return fmt.Errorf("%q left after removing all", si.Name)
	}))
}

func testUsage(t *testing.T, e *env) {
	const size = 1 << 20
	ms, err := e.sn.Prepare(e.ctx, "a", "")
	must(t, err)
	dir := e.mountAt(t, "a", ms)
	empty, err := e.sn.Usage(e.ctx, "a")
	must(t, err)
	must(t, createDir("d", 0o755)(dir))
	must(t, createFile("d/big", strings.Repeat("x", size), 0o644)(dir))
	unmount(t, dir)
	active, err := e.sn.Usage(e.ctx, "a")
	must(t, err)
	if active.Size < empty.Size+size || active.Inodes < empty.Inodes+2 {
		t.Errorf("usage after adding a directory and %d bytes: %+v, before %+v", size, active, empty)
	}
	must(t, e.sn.Commit(e.ctx, "c", "a"))
	committed, err := e.sn.Usage(e.ctx, "c")
	must(t, err)
	if committed != active {
		t.Errorf("committed usage %+v, active usage was %+v", committed, active)
	}
	_, err = e.sn.View(e.ctx, "v", "c")
	must(t, err)
	if u, err := e.sn.Usage(e.ctx, "v"); err != nil || u.Size > committed.Size {
		t.Errorf("usage of a view: %+v, %v", u, err)
	}
}

// Directories that no record refers to (left by a crash) go; the rest
// stays and still works.
func testCleanup(t *testing.T, e *env) {
	layout := storage.Layout(e.root)
	e.layer(t, "keep", "keep-a", "", createFile("f", "kept", 0o644))
	_, err := e.sn.Prepare(e.ctx, "active", "keep")
	must(t, err)
	e.layer(t, "gone", "gone-a", "", createFile("big", strings.Repeat("x", 1<<16), 0o644))
	must(t, e.sn.Remove(e.ctx, "gone"))

	before, err := os.ReadDir(layout.Snapshots())
	must(t, err)
	if len(before) != 2 {
		t.Errorf("after a removal, %d directories remain for 2 snapshots: %v", len(before), before)
	}
	orphans := []string{"999999", "new-crashed", "rm-interrupted-3"}
	for _, o := range orphans {
		must(t, os.MkdirAll(filepath.Join(layout.Snapshots(), o, "fs", "sub"), 0o755))
		must(t, os.WriteFile(filepath.Join(layout.Snapshots(), o, "fs", "sub", "file"), []byte("x"), 0o644))
	}
	must(t, e.sn.Cleanup(e.ctx))
	after, err := os.ReadDir(layout.Snapshots())
	must(t, err)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after cleanup: %v, want %v", after, before)
	}
	ms, err := e.sn.Mounts(e.ctx, "active")
	must(t, err)
	dir := e.mountAt(t, "active", ms)
	if err := compareTrees(e.flat(t, "kept", createFile("f", "kept", 0o644)), dir, false); err != nil {
		t.Error(err)
	}
	unmount(t, dir)
	must(t, e.sn.Cleanup(e.ctx))
}

// A crash after a directory was moved into place but before its record
// committed leaves a directory at the id the next snapshot gets.
func testOrphanAtNextID(t *testing.T, e *env) {
	layout := storage.Layout(e.root)
	_, err := e.sn.Prepare(e.ctx, "first", "")
	must(t, err)
	entries, err := os.ReadDir(layout.Snapshots())
	must(t, err)
	if len(entries) != 1 {
		t.Fatalf("entries after one prepare: %v", entries)
	}
	var id int
	if _, err := fmt.Sscan(entries[0].Name(), &id); err != nil {
		t.Fatalf("directory %q is not named by a number", entries[0].Name())
	}
	for next := id + 1; next <= id+3; next++ {
		orphan := filepath.Join(layout.Snapshots(), fmt.Sprint(next), "fs")
		must(t, os.MkdirAll(orphan, 0o755))
		must(t, os.WriteFile(filepath.Join(orphan, "stale"), []byte("x"), 0o644))
	}
	ms, err := e.sn.Prepare(e.ctx, "second", "")
	must(t, err)
	dir := e.mountAt(t, "second", ms)
	if err := compareTrees(e.flat(t, "empty"), dir, false); err != nil {
		t.Errorf("new snapshot shows an orphan's files: %v", err)
	}
	unmount(t, dir)
	must(t, e.sn.Cleanup(e.ctx))
	entries, err = os.ReadDir(layout.Snapshots())
	must(t, err)
	if len(entries) != 2 {
		t.Errorf("after cleanup: %v, want 2 directories", entries)
	}
}

func testReopen(t *testing.T, e *env) {
	e.layer(t, "base", "base-a", "", createFile("f", "persisted", 0o644))
	_, err := e.sn.Prepare(e.ctx, "active", "base", snapshots.WithLabels(map[string]string{"k": "v"}))
	must(t, err)
	before, err := e.sn.Stat(e.ctx, "active")
	must(t, err)
	must(t, e.sn.Close())
	e.sn, err = e.new(e.ctx, e.root)
	must(t, err)
	after, err := e.sn.Stat(e.ctx, "active")
	must(t, err)
	if !equalInfo(before, after) {
		t.Errorf("after reopening: %+v, before %+v", after, before)
	}
	ms, err := e.sn.Mounts(e.ctx, "active")
	must(t, err)
	dir := e.mountAt(t, "active", ms)
	if err := compareTrees(e.flat(t, "f", createFile("f", "persisted", 0o644)), dir, false); err != nil {
		t.Error(err)
	}
	unmount(t, dir)
	// New ids do not collide with the old ones.
	e.layer(t, "more", "more-a", "base", createFile("g", "new", 0o644))
	e.checkView(t, "v", "more", e.flat(t, "fg", createFile("f", "persisted", 0o644), createFile("g", "new", 0o644)))
}

func testCloseTwice(t *testing.T, e *env) {
	_, err := e.sn.Prepare(e.ctx, "p", "")
	must(t, err)
	must(t, e.sn.Commit(e.ctx, "c", "p"))
	must(t, e.sn.Remove(e.ctx, "c"))
	must(t, e.sn.Close())
	must(t, e.sn.Close())
	if _, err := e.sn.Stat(e.ctx, "c"); err == nil {
		t.Error("stat after close succeeded")
	}
}

func testConcurrent(t *testing.T, e *env) {
	e.layer(t, "base", "base-a", "", createFile("f", "base", 0o644))
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("extract-%d sha256:%d", i, i)
			if _, err := e.sn.Prepare(e.ctx, key, "base"); err != nil {
				errs <- err
				return
			}
			if err := e.sn.Commit(e.ctx, fmt.Sprintf("layer-%d", i), key); err != nil {
				errs <- err
				return
			}
			if _, err := e.sn.View(e.ctx, fmt.Sprintf("view-%d", i), fmt.Sprintf("layer-%d", i)); err != nil {
				errs <- err
			}
		})
		if i%4 == 0 {
			wg.Go(func() {
				if err := e.sn.Cleanup(e.ctx); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var count int
	must(t, e.sn.Walk(e.ctx, func(context.Context, snapshots.Info) error { count++; return nil }))
	if count != 1+2*n {
		t.Errorf("%d snapshots, want %d", count, 1+2*n)
	}
	entries, err := os.ReadDir(storage.Layout(e.root).Snapshots())
	must(t, err)
	if len(entries) != count {
		t.Errorf("%d directories for %d snapshots", len(entries), count)
	}
	for i := range n {
		wg.Go(func() {
			if err := e.sn.Remove(e.ctx, fmt.Sprintf("view-%d", i)); err != nil {
				t.Error(err)
				return
			}
			if err := e.sn.Remove(e.ctx, fmt.Sprintf("layer-%d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	entries, err = os.ReadDir(storage.Layout(e.root).Snapshots())
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("after removing all but the base: %v", entries)
	}
}
