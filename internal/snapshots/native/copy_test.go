package native

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

func TestCopyTree(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "a", "b"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a", "f"), []byte("data"), 0o644))
	// Hard links across directories, and to a symlink.
	must(os.Link(filepath.Join(src, "a", "f"), filepath.Join(src, "a", "b", "f")))
	must(os.Symlink("/nowhere", filepath.Join(src, "dangling")))
	must(os.Link(filepath.Join(src, "dangling"), filepath.Join(src, "a", "dangling2")))
	must(unix.Mknod(filepath.Join(src, "sock"), unix.S_IFSOCK|0o600, 0))
	must(unix.Lsetxattr(filepath.Join(src, "a", "f"), "trusted.berth", []byte("t"), 0))
	must(unix.Lsetxattr(filepath.Join(src, "dangling"), "trusted.link", []byte("l"), 0))
	must(unix.Fchmodat(unix.AT_FDCWD, filepath.Join(src, "a"), 0o2750, 0))
	must(os.Lchown(filepath.Join(src, "a"), 7, 8))

	must(CopyTree(context.Background(), dst, src))

	var a, b, f unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "a", "f"), &a))
	must(unix.Lstat(filepath.Join(dst, "a", "b", "f"), &b))
	must(unix.Lstat(filepath.Join(src, "a", "f"), &f))
	if a.Ino != b.Ino || a.Ino == f.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d, %d (source %d), links %d", a.Ino, b.Ino, f.Ino, a.Nlink)
	}
	var l1, l2 unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "dangling"), &l1))
	must(unix.Lstat(filepath.Join(dst, "a", "dangling2"), &l2))
	if l1.Ino != l2.Ino || l1.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("hard-linked symlink not preserved")
	}
	if target, _ := os.Readlink(filepath.Join(dst, "dangling")); target != "/nowhere" {
		t.Errorf("symlink target %q", target)
	}
	var s unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "sock"), &s))
	if s.Mode != unix.S_IFSOCK|0o600 {
		t.Errorf("socket mode %#o", s.Mode)
	}
	var d unix.Stat_t
	must(unix.Lstat(filepath.Join(dst, "a"), &d))
	if d.Mode&0o7777 != 0o2750 || d.Uid != 7 || d.Gid != 8 {
		t.Errorf("directory mode %#o owner %d:%d", d.Mode&0o7777, d.Uid, d.Gid)
	}
	for p, want := range map[string]string{"a/f:trusted.berth": "t", "dangling:trusted.link": "l"} {
		name, attr, _ := cut(p)
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(dst, name), attr, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("xattr %s: %q, %v", p, buf[:n], err)
		}
	}
	if err := CopyTree(context.Background(), dst, src); err == nil {
		t.Error("copy onto an existing destination succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := CopyTree(ctx, filepath.Join(dir, "cancelled"), src); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v", err)
	}
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
