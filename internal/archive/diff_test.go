//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// copyTree copies src to dst (which must not exist) with everything a
// layer carries, hardlinks included, independently of the code under test.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	links := map[uint64]string{}
	type dirTime struct {
		p  string
		st unix.Stat_t
	}
	var dirs []dirTime
	err := filepath.Walk(src, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				return os.Link(first, to)
			}
			links[st.Ino] = to
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			err = os.Mkdir(to, 0o700)
			dirs = append(dirs, dirTime{to, st})
		case unix.S_IFREG:
			var b []byte
			if b, err = os.ReadFile(p); err == nil {
				err = os.WriteFile(to, b, 0o600)
			}
		case unix.S_IFLNK:
			var target string
			if target, err = os.Readlink(p); err == nil {
				err = os.Symlink(target, to)
			}
		default:
			err = unix.Mknod(to, st.Mode&unix.S_IFMT|0o600, int(st.Rdev))
		}
		if err != nil {
			return err
		}
		if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		xs, err := lxattrs(p)
		if err != nil {
			return err
		}
		for k, v := range xs {
			if err := unix.Lsetxattr(to, k, []byte(v), 0); err != nil {
				return err
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Chmod(to, st.Mode&0o7777); err != nil {
				return err
			}
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, to, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d.p, []unix.Timespec{d.st.Atim, d.st.Mtim}, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// tree builds files from a compact description; every mtime is a whole
// second, as after a round trip through a tar.
type fsOp func(t *testing.T, root string)

func mkfile(p, content string, mode os.FileMode) fsOp {
	return func(t *testing.T, root string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(full)
		if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
		touch(p, testTime)(t, root)
	}
}

func mkdir(p string, mode os.FileMode) fsOp {
	return func(t *testing.T, root string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func do(f func(root string) error) fsOp {
	return func(t *testing.T, root string) {
		t.Helper()
		if err := f(root); err != nil {
			t.Fatal(err)
		}
	}
}

func touch(p string, tm time.Time) fsOp {
	return do(func(root string) error {
		ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, p), ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func build(t *testing.T, root string, ops ...fsOp) {
	t.Helper()
	for _, op := range ops {
		op(t, root)
	}
}

// roundTripFields compares what a layer round trip must preserve: types,
// modes, owners, contents, symlink targets, xattrs, device numbers, link
// counts of non-directories, and mtimes of regular files.
func roundTripFields(n node) node {
	n.Ino, n.Ctime = 0, 0
	if n.IsDirectory {
		n.Mtime, n.Size, n.Nlink = 0, 0, 0
	}
	if n.Mode&unix.S_IFMT == unix.S_IFLNK || n.Mode&unix.S_IFMT == unix.S_IFIFO || n.Mode&unix.S_IFMT == unix.S_IFCHR {
		n.Mtime = 0
	}
	return n
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

func lowerTree() []fsOp {
	return []fsOp{
		mkfile("a/file1", "one", 0o644),
		mkfile("a/file2", "two", 0o644),
		mkfile("a/sub/deep", "deep", 0o644),
		mkfile("b/x", "x", 0o644), mkfile("b/y", "y", 0o644), mkfile("b/z", "z", 0o644),
		mkfile("c/1", "1", 0o644), mkfile("c/sub/2", "2", 0o644),
		mkfile("d/child", "child", 0o644),
		mkfile("e", "e", 0o644),
		mkfile("hard1", "h", 0o644),
		do(func(r string) error { return os.Link(filepath.Join(r, "hard1"), filepath.Join(r, "hard2")) }),
		do(func(r string) error { return os.Symlink("a/file1", filepath.Join(r, "link")) }),
		do(func(r string) error { return unix.Mkfifo(filepath.Join(r, "fifo"), 0o600) }),
		do(func(r string) error {
			return unix.Mknod(filepath.Join(r, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		}),
		mkfile("xattr", "x", 0o644),
		do(func(r string) error { return unix.Setxattr(filepath.Join(r, "xattr"), "user.a", []byte("1"), 0) }),
		mkfile("chmod", "c", 0o644),
		mkfile("chown", "c", 0o644),
		mkfile("mtime", "m", 0o644),
		mkfile("samesize", "aaaa", 0o644),
		mkfile("unchanged/f", "u", 0o644),
		mkdir("emptydir", 0o755),
		mkfile("sock-parent/f", "f", 0o644),
	}
}

func upperChanges() []fsOp {
	t2 := time.Unix(1_700_000_000, 0)
	return []fsOp{
		mkfile("a/new", "new", 0o644),
		mkfile("newdir/nested/f", "nested", 0o640),
		mkfile("a/file1", "ONE!", 0o644), touch("a/file1", t2),
		do(func(r string) error { return os.Remove(filepath.Join(r, "a/file2")) }),
		do(func(r string) error { return os.RemoveAll(filepath.Join(r, "c")) }),
		do(func(r string) error { return os.RemoveAll(filepath.Join(r, "d")) }), mkfile("d", "d is a file", 0o600),
		do(func(r string) error { return os.Remove(filepath.Join(r, "e")) }), mkfile("e/inside", "inside", 0o644),
		do(func(r string) error {
			for _, n := range []string{"x", "y", "z"} {
				if err := os.Remove(filepath.Join(r, "b", n)); err != nil {
					return err
				}
			}
			return nil
		}),
		mkfile("b/w", "w", 0o644),
		do(func(r string) error {
			os.Remove(filepath.Join(r, "link"))
			return os.Symlink("a/sub", filepath.Join(r, "link"))
		}),
		do(func(r string) error { return unix.Setxattr(filepath.Join(r, "xattr"), "user.a", []byte("2"), 0) }),
		do(func(r string) error { return unix.Setxattr(filepath.Join(r, "chmod"), "user.b", []byte("b"), 0) }),
		do(func(r string) error { return os.Link(filepath.Join(r, "hard1"), filepath.Join(r, "hard3")) }),
		do(func(r string) error { return os.Chmod(filepath.Join(r, "chmod"), 0o4755) }),
		do(func(r string) error { return os.Lchown(filepath.Join(r, "chown"), 1000, 1000) }),
		touch("mtime", t2),
		mkfile("samesize", "bbbb", 0o644), // same size, same whole-second mtime
		do(func(r string) error { return os.Remove(filepath.Join(r, "fifo")) }),
		do(func(r string) error { return unix.Mkfifo(filepath.Join(r, "fifo2"), 0o644) }),
		do(func(r string) error { return os.Remove(filepath.Join(r, "null")) }), mkfile("null", "not a device", 0o644),
		mkdir("emptydir", 0o700),
		do(func(r string) error {
			// A socket is not carried, nor is it whited out.
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(r, "sock-parent/sock")})
		}),
	}
}

func TestDiffRoundTrip(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	lower, upper, target := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "target")
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	build(t, lower, lowerTree()...)
	copyTree(t, lower, upper)
	build(t, upper, upperChanges()...)
	copyTree(t, lower, target)

	var buf bytes.Buffer
	if err := Diff(context.Background(), lower, upper, &buf); err != nil {
		t.Fatal(err)
	}
	layerBytes := append([]byte(nil), buf.Bytes()...)
	names := tarNames(t, layerBytes)
	t.Logf("diff entries: %v", names)
	joined := " " + strings.Join(names, " ") + " "
	for _, want := range []string{"a/", "a/file1", "a/new", "a/.wh.file2", ".wh.c", "b/", "b/.wh..wh..opq", "b/w", "d", "e/", "e/inside", "link", "xattr", "chmod", "chown", "mtime", "samesize", "hard3", ".wh.fifo", "fifo2", "null", "emptydir/", "newdir/", "newdir/nested/", "newdir/nested/f"} {
		if !strings.Contains(joined, " "+want+" ") {
			t.Errorf("diff lacks %q", want)
		}
	}
	for _, absent := range []string{"a/sub/", "a/sub/deep", "unchanged/", "unchanged/f", "b/.wh.x", "c/1", "sock-parent/sock", "sock-parent/.wh.sock"} {
		if strings.Contains(joined, " "+absent+" ") {
			t.Errorf("diff carries unchanged or implied %q", absent)
		}
	}

	buf.Reset()
	if err := Diff(context.Background(), lower, upper, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), layerBytes) {
		t.Error("Diff is not deterministic")
	}

	mustApply(t, target, layerBytes)
	want := snapshot(t, upper, "sock-parent/sock")
	got := snapshot(t, target, "")
	if diffs := compareTrees(want, got, roundTripFields); len(diffs) > 0 {
		t.Errorf("apply(diff(lower, upper)) onto lower != upper:\n%s", strings.Join(diffs, "\n"))
	}
}

func TestDiffOverlayUpper(t *testing.T) {
	requireRoot(t)
	upper := t.TempDir()
	build(t, upper,
		mkfile("new", "n", 0o644),
		mkfile("op/f", "f", 0o644),
		mkfile("dir/g", "g", 0o644),
		do(func(r string) error { return unix.Mknod(filepath.Join(r, "gone"), unix.S_IFCHR, 0) }),
		do(func(r string) error { return unix.Mknod(filepath.Join(r, "dir/gone2"), unix.S_IFCHR, 0) }),
		do(func(r string) error {
			return unix.Setxattr(filepath.Join(r, "op"), "trusted.overlay.opaque", []byte("y"), 0)
		}),
		do(func(r string) error {
			return unix.Setxattr(filepath.Join(r, "dir"), "trusted.overlay.opaque", []byte("x"), 0)
		}),
	)
	var buf bytes.Buffer
	if err := DiffOverlayUpper(context.Background(), upper, &buf); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(tarNames(t, buf.Bytes()), " ")
	want := "dir/ dir/g dir/.wh.gone2 .wh.gone new op/ op/.wh..wh..opq op/f"
	if got != want {
		t.Errorf("entries\n got %s\nwant %s", got, want)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		for k := range hdr.PAXRecords {
			if strings.Contains(k, "overlay") {
				t.Errorf("%s carries %s", hdr.Name, k)
			}
		}
	}

	if err := unix.Setxattr(filepath.Join(upper, "dir"), "trusted.overlay.redirect", []byte("/elsewhere"), 0); err != nil {
		t.Fatal(err)
	}
	if err := DiffOverlayUpper(context.Background(), upper, io.Discard); err == nil {
		t.Error("an upper dir with a redirect was diffed")
	}
}

// TestOverlayEndToEnd mounts overlayfs over a lower layer and an upper dir
// filled by Apply in overlay mode, and checks that the merged view equals a
// native apply of the same layer; then that DiffOverlayUpper of that upper
// dir reproduces the merged view again.
func TestOverlayEndToEnd(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mk := func(n string) string {
		p := filepath.Join(dir, n)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lower, upper, work, merged, native, again := mk("lower"), mk("upper"), mk("work"), mk("merged"), mk("native"), mk("again")
	base := layer(t,
		D("a/").mode(0o750).owner(3, 3), F("a/x", "x"), F("a/y", "y"), D("a/sub/"), F("a/sub/s", "s"),
		D("b/"), F("b/old", "o"), D("b/olddir/"), F("b/olddir/f", "f"),
		F("c", "c"), D("d/"), F("d/k", "k"), L("l", "a/x"),
	)
	mustApply(t, lower, base)
	mustApply(t, native, base)
	mustApply(t, again, base)
	change := layer(t,
		W("a/.wh.x"), F("a/z", "z"), F("a/sub/t", "t"),
		D("b/"), W("b/.wh..wh..opq"), F("b/new", "n"),
		W(".wh.c"), W(".wh.d"), D("d/"), F("d/fresh", "f"),
		F("l", "now a file"),
	)
	mustApply(t, upper, change, WithOverlayWhiteouts(), WithParents(lower))
	mustApply(t, native, change)

	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	err := unix.Mount("overlay", merged, "overlay", 0, opts)
	if err == unix.EPERM || err == unix.ENODEV {
		requireOverlay(t, err)
	}
	if err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)

	fields := func(n node) node {
		n = roundTripFields(n)
		n.Xattrs = "" // overlayfs hides trusted.overlay.* but not the rest; not compared here
		return n
	}
	want := snapshot(t, native, "")
	if diffs := compareTrees(want, snapshot(t, merged, ""), fields); len(diffs) > 0 {
		t.Errorf("overlay merged view != native apply:\n%s", strings.Join(diffs, "\n"))
	}

	var buf bytes.Buffer
	if err := DiffOverlayUpper(context.Background(), upper, &buf); err != nil {
		t.Fatal(err)
	}
	mustApply(t, again, buf.Bytes())
	if diffs := compareTrees(want, snapshot(t, again, ""), fields); len(diffs) > 0 {
		t.Errorf("apply(DiffOverlayUpper) != native apply:\n%s", strings.Join(diffs, "\n"))
	}
}

func requireOverlay(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("overlayfs mount not possible under CI: %v", err)
	}
	t.Skipf("overlayfs mount not possible here: %v", err)
}
