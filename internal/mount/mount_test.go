package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		opts  []string
		flags uintptr
		data  []string
	}{
		{nil, 0, nil},
		{[]string{"rw", "rbind"}, unix.MS_BIND | unix.MS_REC, nil},
		{[]string{"ro", "rbind"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, nil},
		{[]string{"ro", "rw"}, 0, nil},
		{[]string{"nosuid", "nodev", "rprivate", "mode=755"}, unix.MS_NOSUID | unix.MS_NODEV | unix.MS_PRIVATE | unix.MS_REC, []string{"mode=755"}},
		{[]string{"index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"}, 0, []string{"index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"}},
	} {
		flags, data := parseOptions(tc.opts)
		if flags != tc.flags || !slices.Equal(data, tc.data) {
			t.Errorf("parseOptions(%q) = %#x, %q; want %#x, %q", tc.opts, flags, data, tc.flags, tc.data)
		}
	}
}

func TestCompactLowerdir(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		dir  string
		out  []string
		ok   bool
	}{
		{
			opts: []string{"index=off", "lowerdir=/r/snapshots/12/fs:/r/snapshots/3/fs", "upperdir=/r/snapshots/13/fs"},
			dir:  "/r/snapshots",
			out:  []string{"index=off", "lowerdir=12/fs:3/fs", "upperdir=/r/snapshots/13/fs"},
			ok:   true,
		},
		{
			opts: []string{"lowerdir=/a/b/c:/a/b/c/d:/a/b/e"},
			dir:  "/a/b",
			out:  []string{"lowerdir=c:c/d:e"},
			ok:   true,
		},
		{opts: []string{"lowerdir=/a/x:/b/y"}},
		{opts: []string{"lowerdir=a/x:a/y"}},
		{opts: []string{`lowerdir=/a/x\:1:/a/y`}},
		{opts: []string{"upperdir=/a/x"}},
	} {
		dir, out, ok := compactLowerdir(tc.opts)
		if ok != tc.ok || dir != tc.dir || !slices.Equal(out, tc.out) {
			t.Errorf("compactLowerdir(%q) = %q, %q, %v; want %q, %q, %v", tc.opts, dir, out, ok, tc.dir, tc.out, tc.ok)
		}
	}
}

func TestJoin(t *testing.T) {
	for _, tc := range []struct{ target, sub, want string }{
		{"/m", "", "/m"},
		{"/m", "a/b", "/m/a/b"},
		{"/m", "/a", "/m/a"},
		{"/m", "../../etc", "/m/etc"},
	} {
		if got := join(tc.target, tc.sub); got != tc.want {
			t.Errorf("join(%q, %q) = %q, want %q", tc.target, tc.sub, got, tc.want)
		}
	}
}

func TestReadonly(t *testing.T) {
	got := readonly(Mount{Type: "overlay", Source: "overlay", Options: []string{"index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"}})
	want := []string{"index=off", "lowerdir=/u:/a:/b", "ro"}
	if !slices.Equal(got.Options, want) {
		t.Errorf("readonly overlay options = %q, want %q", got.Options, want)
	}
	got = readonly(Mount{Type: "bind", Source: "/s", Options: []string{"rw", "rbind"}})
	if want := []string{"rbind", "ro"}; !slices.Equal(got.Options, want) {
		t.Errorf("readonly bind options = %q, want %q", got.Options, want)
	}
}

func TestProto(t *testing.T) {
	ms := []Mount{{Type: "overlay", Source: "overlay", Target: "x", Options: []string{"lowerdir=/a"}}, {Type: "bind", Source: "/s"}}
	if got := FromProto(ToProto(ms)); !slices.EqualFunc(got, ms, func(a, b Mount) bool {
		return a.Type == b.Type && a.Source == b.Source && a.Target == b.Target && slices.Equal(a.Options, b.Options)
	}) {
		t.Errorf("round trip = %+v, want %+v", got, ms)
	}
	if FromProto(nil) != nil || ToProto(nil) != nil {
		t.Error("nil mounts must stay nil")
	}
}

// requireMounts skips (or fails under CI) when the test can not mount.
func requireMounts(t *testing.T, overlay bool) {
	t.Helper()
	testutil.RequireRoot(t)
	if overlay {
		b, _ := os.ReadFile("/proc/filesystems")
		testutil.Require(t, strings.Contains(string(b), "\toverlay\n"), "overlayfs in /proc/filesystems")
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func unmountAtEnd(t *testing.T, target string) {
	t.Cleanup(func() {
		if err := UnmountAll(target, 0); err != nil {
			t.Errorf("UnmountAll(%q): %v", target, err)
		}
	})
}

func TestBind(t *testing.T) {
	requireMounts(t, false)
	dir := t.TempDir()
	src, rw, ro := filepath.Join(dir, "src"), filepath.Join(dir, "rw"), filepath.Join(dir, "ro")
	write(t, filepath.Join(src, "f"), "hello")
	for _, d := range []string{rw, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	if err := All([]Mount{{Type: "bind", Source: src, Options: []string{"rw", "rbind"}}}, rw); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, rw)
	write(t, filepath.Join(rw, "g"), "through the bind")
	if got := read(t, filepath.Join(src, "g")); got != "through the bind" {
		t.Errorf("source sees %q", got)
	}

	if err := All([]Mount{{Type: "bind", Source: src, Options: []string{"ro", "rbind"}}}, ro); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, ro)
	if got := read(t, filepath.Join(ro, "f")); got != "hello" {
		t.Errorf("read-only bind shows %q", got)
	}
	if err := os.WriteFile(filepath.Join(ro, "h"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write in a read-only bind: %v, want EROFS", err)
	}

	if err := Unmount(ro, 0); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(ro, 0); err != nil {
		t.Errorf("Unmount of a directory that is no mount point: %v", err)
	}
	if err := UnmountAll(filepath.Join(dir, "missing"), 0); err != nil {
		t.Errorf("UnmountAll of a missing path: %v", err)
	}
}

func TestUnmountAllStack(t *testing.T) {
	requireMounts(t, false)
	dir := t.TempDir()
	a, b, target := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "t")
	write(t, filepath.Join(a, "f"), "a")
	write(t, filepath.Join(b, "f"), "b")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	ms := []Mount{
		{Type: "bind", Source: a, Options: []string{"rbind"}},
		{Type: "bind", Source: b, Options: []string{"rbind", "ro"}},
	}
	if err := All(ms, target); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(target, "f")); got != "b" {
		t.Errorf("top of the stack shows %q, want b", got)
	}
	if err := UnmountAll(target, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(target, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after UnmountAll the target still shows files: %v", err)
	}
}

func TestAllUndoesOnFailure(t *testing.T) {
	requireMounts(t, false)
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "t")
	write(t, filepath.Join(src, "f"), "x")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	err := All([]Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "bind", Source: filepath.Join(dir, "missing"), Options: []string{"rbind"}},
	}, target)
	if err == nil {
		UnmountAll(target, 0)
		t.Fatal("All with a missing source succeeded")
	}
	if _, err := os.Stat(filepath.Join(target, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the first mount was left behind: %v", err)
	}
}

// TestOverlayManyLayers mounts 128 layers whose paths together are far
// longer than a page, which only works with the lowerdirs compacted.
func TestOverlayManyLayers(t *testing.T) {
	requireMounts(t, true)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 5))
	const layers = 128
	var lowers []string
	for i := range layers {
		l := filepath.Join(root, fmt.Sprintf("layer-%03d", i), "fs")
		write(t, filepath.Join(l, fmt.Sprintf("file-%03d", i)), fmt.Sprint(i))
		write(t, filepath.Join(l, "top"), fmt.Sprint(i))
		lowers = append(lowers, l)
	}
	slices.Reverse(lowers) // nearest (highest) first
	upper, work, target := filepath.Join(root, "upper"), filepath.Join(root, "work"), filepath.Join(root, "merged")
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{
		"index=off",
		"workdir=" + work,
		"upperdir=" + upper,
		"lowerdir=" + strings.Join(lowers, ":"),
	}}
	if n := len(strings.Join(m.Options, ",")); n < pagesize {
		t.Fatalf("test data is only %d bytes, not longer than a page", n)
	}
	if err := All([]Mount{m}, target); err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, target)

	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != layers+1 {
		t.Errorf("union has %d entries, want %d", len(entries), layers+1)
	}
	for i := range layers {
		if got := read(t, filepath.Join(target, fmt.Sprintf("file-%03d", i))); got != fmt.Sprint(i) {
			t.Errorf("file-%03d = %q", i, got)
		}
	}
	if got := read(t, filepath.Join(target, "top")); got != fmt.Sprint(layers-1) {
		t.Errorf("top = %q, want the nearest layer's %d", got, layers-1)
	}
	write(t, filepath.Join(target, "new"), "upper")
	if got := read(t, filepath.Join(upper, "new")); got != "upper" {
		t.Errorf("upper has %q", got)
	}
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("working directory changed from %q to %q", wd, now)
	}

	// The read-only form stacks the upper on top of the lowers.
	err = WithReadonlyTempMount(context.Background(), []Mount{m}, func(root string) error {
		if got := read(t, filepath.Join(root, "new")); got != "upper" {
			t.Errorf("read-only view shows %q for the upper's file", got)
		}
		if err := os.WriteFile(filepath.Join(root, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("write in read-only view: %v, want EROFS", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOverlayTooLong(t *testing.T) {
	requireMounts(t, true)
	dir := t.TempDir()
	var lowers []string
	for i := range 40 {
		// Parents differ right below the temporary directory, and the
		// names are long: no compaction can make this fit.
		l := filepath.Join(dir, fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 120)))
		if err := os.Mkdir(l, 0o755); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, l)
	}
	target := filepath.Join(dir, "t")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	err := All([]Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(lowers, ":")}}}, target)
	if err == nil {
		UnmountAll(target, 0)
		t.Fatal("mounted an overlay whose data can not fit")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":            "/plain",
		`/a\040b`:           "/a b",
		`/tab\011and\134bs`: "/tab\tand\\bs",
		`/short\04`:         `/short\04`,
		`/not\999octal`:     `/not\999octal`,
	} {
		if got := UnescapeMountinfo(in); got != want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
