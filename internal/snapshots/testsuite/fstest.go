package testsuite

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// applier changes the tree at root; the same applier run on a plain
// directory and on a mounted snapshot must give equal trees.
type applier func(root string) error

func apply(as ...applier) applier {
	return func(root string) error {
		for _, a := range as {
			if err := a(root); err != nil {
				return err
			}
		}
		return nil
	}
}

// createFile writes a file (replacing any) with exactly perm.
func createFile(name, data string, perm os.FileMode) applier {
	return func(root string) error {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(data), perm); err != nil {
			return err
		}
		return os.Chmod(p, perm)
	}
}

// createDir makes a directory (or changes an existing one) with perm.
func createDir(name string, perm os.FileMode) applier {
	return func(root string) error {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, perm); err != nil && !os.IsExist(err) {
			return err
		}
		return os.Chmod(p, perm)
	}
}

func removeAll(name string) applier {
	return func(root string) error { return os.RemoveAll(filepath.Join(root, name)) }
}

func rename(oldname, newname string) applier {
	return func(root string) error {
		return os.Rename(filepath.Join(root, oldname), filepath.Join(root, newname))
	}
}

func link(oldname, newname string) applier {
	return func(root string) error {
		return os.Link(filepath.Join(root, oldname), filepath.Join(root, newname))
	}
}

func symlink(target, name string) applier {
	return func(root string) error { return os.Symlink(target, filepath.Join(root, name)) }
}

func chown(name string, uid, gid int) applier {
	return func(root string) error { return os.Lchown(filepath.Join(root, name), uid, gid) }
}

// chmod sets a mode including set-id and sticky bits (given as Unix bits).
func chmod(name string, mode uint32) applier {
	return func(root string) error {
		return unix.Fchmodat(unix.AT_FDCWD, filepath.Join(root, name), mode, 0)
	}
}

func mknod(name string, mode uint32, dev int) applier {
	return func(root string) error { return unix.Mknod(filepath.Join(root, name), mode, dev) }
}

func setxattr(name, key, value string) applier {
	return func(root string) error {
		return unix.Lsetxattr(filepath.Join(root, name), key, []byte(value), 0)
	}
}

// chtimes sets access and modification time (seconds and nanoseconds),
// not following symlinks.
func chtimes(name string, sec, nsec int64) applier {
	return func(root string) error {
		ts := []unix.Timespec{{Sec: sec, Nsec: nsec}, {Sec: sec, Nsec: nsec}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, name), ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// entry is what the comparison looks at in one file.
type entry struct {
	mode     uint32 // type and permission bits, as st_mode
	uid, gid uint32
	data     string // contents of a regular file, target of a symlink
	rdev     uint64
	linkedTo string // first path (in walk order) with the same inode
	xattrs   string // user.* attributes, sorted
	mtime    unix.Timespec
}

// capture describes the tree at root, root itself excluded.
func capture(root string) (map[string]entry, error) {
	tree := map[string]entry{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{mode: st.Mode, uid: st.Uid, gid: st.Gid, mtime: st.Mtim}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.data = string(b)
		case unix.S_IFLNK:
			if e.data, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			e.rdev = st.Rdev
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if first, ok := inodes[st.Ino]; ok {
				e.linkedTo = first
			} else {
				inodes[st.Ino] = rel
			}
		}
		e.xattrs = userXattrs(p)
		tree[rel] = e
		return nil
	})
	return tree, err
}

func userXattrs(p string) string {
	n, err := unix.Llistxattr(p, nil)
	if err != nil || n == 0 {
		return ""
	}
	buf := make([]byte, n)
	n, err = unix.Llistxattr(p, buf)
	if err != nil {
		return ""
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out = append(out, name+"="+string(v[:m]))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// compareTrees reports how the tree at got differs from the one at want.
// Modification times are compared only with times set.
func compareTrees(want, got string, times bool) error {
	w, err := capture(want)
	if err != nil {
		return err
	}
	g, err := capture(got)
	if err != nil {
		return err
	}
	var diffs []string
	for p, we := range w {
		ge, ok := g[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: missing", p))
		case ge.mode != we.mode:
			diffs = append(diffs, fmt.Sprintf("%s: mode %#o, want %#o", p, ge.mode, we.mode))
		case ge.uid != we.uid || ge.gid != we.gid:
			diffs = append(diffs, fmt.Sprintf("%s: owner %d:%d, want %d:%d", p, ge.uid, ge.gid, we.uid, we.gid))
		case ge.data != we.data:
			diffs = append(diffs, fmt.Sprintf("%s: contents %.40q, want %.40q", p, ge.data, we.data))
		case ge.rdev != we.rdev:
			diffs = append(diffs, fmt.Sprintf("%s: device %#x, want %#x", p, ge.rdev, we.rdev))
		case ge.linkedTo != we.linkedTo:
			diffs = append(diffs, fmt.Sprintf("%s: hard link to %q, want to %q", p, ge.linkedTo, we.linkedTo))
		case ge.xattrs != we.xattrs:
			diffs = append(diffs, fmt.Sprintf("%s: xattrs %q, want %q", p, ge.xattrs, we.xattrs))
		case times && ge.mtime != we.mtime:
			diffs = append(diffs, fmt.Sprintf("%s: mtime %v, want %v", p, ge.mtime, we.mtime))
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected", p))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	if len(diffs) > 20 {
		diffs = append(diffs[:20], fmt.Sprintf("… and %d more", len(diffs)-20))
	}
	return fmt.Errorf("trees differ (%s vs %s):\n\t%s", got, want, strings.Join(diffs, "\n\t"))
}
