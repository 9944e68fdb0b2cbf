//go:build linux

package archive

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fileID names an inode.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{dev: st.Dev, ino: st.Ino} }

// procPath names the entry name inside the directory open as dirfd through
// /proc/self/fd: the kernel resolves the fd magic link to that very
// directory, so the path cannot be redirected by a symlink above it. It is
// used only with calls that do not follow the last component (lsetxattr,
// llistxattr, lgetxattr) or on fds (for chmod of an O_PATH fd).
func procPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// readDirNames returns the names in the directory open (readable) as fd,
// without "." and "..", sorted.
func readDirNames(fd int) ([]string, error) {
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	sort.Strings(names)
	return names, nil
}

// openDir opens the directory name inside dirfd for reading, without
// following a symlink at name.
func openDir(dirfd int, name string) (int, error) {
	if name == "" {
		name = "."
	}
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// removeAt removes name inside dirfd, recursively if it is a directory,
// never following symlinks. A missing name is not an error.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, oerr := openDir(dirfd, name)
	if oerr != nil {
		if oerr == unix.ENOTDIR || oerr == unix.ELOOP {
			return err // not a directory after all: the unlink error stands
		}
		return oerr
	}
	cerr := removeChildren(fd, nil)
	unix.Close(fd)
	if cerr != nil {
		return cerr
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// removeChildren removes the children of the directory open as fd. With
// keep, a child for which keep returns true is kept; if it is a directory,
// its own children are considered in turn.
func removeChildren(fd int, keep func(*unix.Stat_t) bool) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, name := range names {
		if keep != nil {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if err == unix.ENOENT {
					continue
				}
				return err
			}
			if keep(&st) {
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					sub, err := openDir(fd, name)
					if err != nil {
						return err
					}
					err = removeChildren(sub, keep)
					unix.Close(sub)
					if err != nil {
						return err
					}
				}
				continue
			}
		}
		if err := removeAt(fd, name); err != nil {
			return err
		}
	}
	return nil
}

// futimens sets the access and modification times of the object open as
// fd (utimensat with a NULL path).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// lchmodat sets the mode of name inside dirfd without following a symlink
// at name; a symlink keeps its mode (Linux has none to set). It uses
// fchmodat2 with AT_SYMLINK_NOFOLLOW, or, on kernels before 6.6, an O_PATH
// fd of the object and chmod through its /proc/self/fd link.
func lchmodat(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	return unix.Fchmodat(unix.AT_FDCWD, procPath(fd, ""), mode, 0)
}

// readXattrs returns the xattrs of name inside dirfd (not following a
// symlink at name) for which want returns true. An empty name means the
// directory dirfd itself.
func readXattrs(dirfd int, name string, want func(string) bool) (map[string]string, error) {
	if name == "" {
		name = "." // else the l*xattr calls would see the fd's magic link
	}
	p := procPath(dirfd, name)
	buf := make([]byte, 1024)
	var n int
	for {
		var err error
		n, err = unix.Llistxattr(p, buf)
		if err == unix.ERANGE {
			sz, err := unix.Llistxattr(p, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		break
	}
	var out map[string]string
	for _, key := range strings.Split(string(buf[:n]), "\x00") {
		if key == "" || !want(key) {
			continue
		}
		v, err := lgetxattr(p, key)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]string{}
		}
		out[key] = string(v)
	}
	return out, nil
}

func lgetxattr(p, key string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, key, buf)
		if err == unix.ERANGE {
			sz, err := unix.Lgetxattr(p, key, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// fgetxattr reads one xattr of the object open (not O_PATH) as fd; a
// missing one is nil.
func fgetxattr(fd int, key string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(fd, key, buf)
		switch {
		case err == unix.ERANGE:
			sz, err := unix.Fgetxattr(fd, key, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		case err == unix.ENODATA || err == unix.ENOTSUP || err == unix.EOPNOTSUPP:
			return nil, nil
		case err != nil:
			return nil, err
		}
		return buf[:n], nil
	}
}

// isOverlayXattr reports the xattrs that steer overlayfs. They are never
// taken from a layer nor written into one.
func isOverlayXattr(key string) bool {
	return strings.HasPrefix(key, "trusted.overlay.") || strings.HasPrefix(key, "user.overlay.")
}

// diffXattr reports the xattrs that Diff carries into a layer.
func diffXattr(key string) bool {
	return !isOverlayXattr(key) && key != "security.selinux"
}

// isNotExist covers the errors meaning "nothing there to resolve".
func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}
