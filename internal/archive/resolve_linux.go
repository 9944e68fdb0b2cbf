//go:build linux

package archive

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// maxSymlinks bounds the symlinks followed while resolving one path, as the
// kernel's MAXSYMLINKS does.
const maxSymlinks = 40

// noOpenat2 is set once openat2(2) turned out to be missing (ENOSYS, or
// EPERM from a seccomp filter that does not know it); resolution then walks
// component by component.
var noOpenat2 atomic.Bool

// resolver resolves directory paths inside a root directory fd, with
// symlinks interpreted as if the root were "/". It never caches anything
// between calls: each call starts from the root again.
type resolver struct {
	rootfd int
	// manual forces the component walk even where openat2 works; tests
	// use it to exercise the fallback.
	manual bool
	// created is called for each directory that resolve creates, with its
	// fd and its physical path below root, so that WithParents can copy
	// attributes. It may be nil.
	created func(fd int, rel string) error
}

// resolveDir opens the directory at rel (a cleaned relative path, "" being
// root itself) inside root and returns an O_PATH fd for it, which the caller
// closes. Symlinks met on the way, including the last component, are
// followed inside root. With create, missing directories are made (0755,
// owned by the caller, or as WithParents says) where the resolution lands,
// which may be the target of a dangling symlink, as containerd does.
func (r *resolver) resolveDir(rel string, create bool) (int, error) {
	if !r.manual && !noOpenat2.Load() {
		fd, err := openInRoot(r.rootfd, rel, unix.O_PATH|unix.O_DIRECTORY)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			noOpenat2.Store(true)
		case errors.Is(err, unix.ENOENT) && create:
			// Fall through to the walk, which creates what is missing.
		default:
			return -1, err
		}
	}
	return r.walk(rel, create)
}

// openInRoot is openat2 with RESOLVE_IN_ROOT: ".." stops at dirfd and
// absolute symlinks restart at dirfd. Magic links are refused.
func openInRoot(dirfd int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, rel, &how)
		// EAGAIN: a concurrent rename or mount raced with a ".."; retry.
		if (err == unix.EAGAIN || err == unix.EINTR) && i < 64 {
			continue
		}
		return fd, err
	}
}

// walk is the portable resolution: one component at a time, each opened
// with O_PATH|O_NOFOLLOW relative to the directory before it, symlinks read
// with readlinkat and expanded in place, ".." popping the stack of opened
// directories (never above root). Only directories ever enter the stack, so
// every later *at call is relative to a real directory inside root.
func (r *resolver) walk(rel string, create bool) (fd int, err error) {
	type level struct {
		fd   int
		name string
	}
	stack := []level{{fd: r.rootfd}}
	defer func() {
		// Close everything but what is returned.
		for _, l := range stack[1:] {
			if l.fd != fd {
				unix.Close(l.fd)
			}
		}
		if err != nil {
			fd = -1
		}
	}()
	physical := func() string {
		names := make([]string, 0, len(stack)-1)
		for _, l := range stack[1:] {
			names = append(names, l.name)
		}
		return strings.Join(names, "/")
	}

	queue := splitPath(rel)
	links := 0
	var linkbuf [unix.PathMax]byte
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1].fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1].fd
		next, err := unix.Openat(cur, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			if err := unix.Mkdirat(cur, c, 0o755); err != nil && err != unix.EEXIST {
				return -1, fmt.Errorf("mkdir %q: %w", c, err)
			}
			next, err = unix.Openat(cur, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil && r.created != nil {
				var st unix.Stat_t
				if unix.Fstat(next, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
					rel := physical()
					if rel != "" {
						rel += "/"
					}
					if cerr := r.created(next, rel+c); cerr != nil {
						unix.Close(next)
						return -1, cerr
					}
				}
			}
		}
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, level{fd: next, name: c})
		case unix.S_IFLNK:
			links++
			if links > maxSymlinks {
				unix.Close(next)
				return -1, unix.ELOOP
			}
			n, err := unix.Readlinkat(next, "", linkbuf[:])
			unix.Close(next)
			if err != nil {
				return -1, err
			}
			target := string(linkbuf[:n])
			if strings.HasPrefix(target, "/") {
				for _, l := range stack[1:] {
					unix.Close(l.fd)
				}
				stack = stack[:1]
			}
			queue = append(splitPath(target), queue...)
		default:
			unix.Close(next)
			return -1, unix.ENOTDIR
		}
	}
	if len(stack) == 1 {
		// Root itself: hand out a fresh fd so that the caller may close it.
		return unix.Openat(r.rootfd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	return stack[len(stack)-1].fd, nil
}

// splitPath splits a slash-separated path into its components.
func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// cleanName makes a tar entry name relative to root: cleaned as if rooted
// at "/" so that ".." can never climb above root, without the leading
// slash. Root itself is "".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// splitName splits a cleaned name into its directory ("" for root) and its
// last component.
func splitName(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}
