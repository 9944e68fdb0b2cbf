//go:build linux

package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = whiteoutPrefix + whiteoutPrefix
	whiteoutOpaqueDir  = whiteoutMetaPrefix + ".opq"
	paxSchilyXattr     = "SCHILY.xattr."
	overlayOpaqueXattr = "trusted.overlay.opaque"
)

// ErrInvalidLayer classifies layers that are refused: hardlinks to nothing,
// to root or to a whiteout, whiteouts naming "", "." or "..", unknown entry
// types. It wraps errdefs.ErrInvalidArgument.
var ErrInvalidLayer = fmt.Errorf("invalid layer: %w", errdefs.ErrInvalidArgument)

// ApplyOpt configures Apply.
type ApplyOpt func(*applyOptions)

type applyOptions struct {
	overlay     bool
	parents     []string
	noSameOwner bool
	manual      bool // tests: force the fallback resolution
}

// WithOverlayWhiteouts applies the layer onto an overlayfs upper directory,
// whose lower layers are not under root: an OCI whiteout ".wh.<name>"
// becomes a 0/0 character device <name>, and ".wh..wh..opq" sets
// trusted.overlay.opaque=y on its directory, instead of removing files.
func WithOverlayWhiteouts() ApplyOpt {
	return func(o *applyOptions) { o.overlay = true }
}

// WithParents names the lower directories below root, topmost first. A
// directory that Apply has to create because the layer has no entry for it
// copies its mode, owner, times and xattrs from the first lower directory
// holding that path as a directory (none if a non-directory shadows it),
// so that an overlay upper dir does not change the merged view of it.
func WithParents(lowerDirs ...string) ApplyOpt {
	return func(o *applyOptions) { o.parents = append(o.parents, lowerDirs...) }
}

// WithNoSameOwner keeps the applier's own uid and gid on every file
// instead of the layer's, for unprivileged use.
func WithNoSameOwner() ApplyOpt {
	return func(o *applyOptions) { o.noSameOwner = true }
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Apply reads a layer (uncompressed, gzip or zstd, detected from its magic
// bytes) and applies it onto root, which must be an existing directory. It
// returns the digest and size of the uncompressed tar (the diff_id). On
// error root may hold part of the layer; nothing outside root is touched
// either way. Apply does not sync: see SyncFS.
func Apply(ctx context.Context, root string, r io.Reader, opts ...ApplyOpt) (digest.Digest, int64, error) {
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, fmt.Errorf("open apply root %q: %w", root, err)
	}
	defer unix.Close(rootfd)

	dec, err := Decompress(r)
	if err != nil {
		return "", 0, err
	}
	ra := newReadahead(dec)
	defer ra.Close()

	a := &applier{
		ctx:    ctx,
		opts:   o,
		rootfd: rootfd,
		euid:   os.Geteuid(),
		egid:   os.Getegid(),
	}
	a.res = resolver{rootfd: rootfd, manual: o.manual, created: a.implicitDir}
	if !o.overlay {
		a.layer = make(map[fileID]struct{})
		a.opaqued = make(map[fileID]struct{})
	}
	buf := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(buf)
	a.buf = *buf
	defer a.closeParents()

	tr := tar.NewReader(ra)
	for {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, fmt.Errorf("read layer: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return "", 0, fmt.Errorf("apply layer entry %q: %w", short(hdr.Name), err)
		}
	}
	// The diff_id covers the whole stream, trailing blocks included.
	if _, err := io.CopyBuffer(io.Discard, ra, a.buf); err != nil {
		return "", 0, fmt.Errorf("read layer: %w", err)
	}
	if err := a.restoreDirTimes(); err != nil {
		return "", 0, err
	}
	d, size := ra.Digest()
	return d, size, nil
}

// applier holds the state of one Apply.
type applier struct {
	ctx        context.Context
	opts       applyOptions
	rootfd     int
	res        resolver
	euid, egid int
	buf        []byte

	// layer holds the inodes this layer created or merged into (native
	// mode), which an opaque marker keeps; opaqued the directories already
	// made opaque.
	layer   map[fileID]struct{}
	opaqued map[fileID]struct{}
	dirs    []dirTimes

	// parentFds are the lower dirs of WithParents, opened on first use.
	parentFds []int
	parentsOK bool
}

// dirTimes is a directory whose times are set once all entries are in.
type dirTimes struct {
	name string
	id   fileID
	ts   [2]unix.Timespec
}

func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	name := cleanName(hdr.Name)
	if name == "" {
		log.G(a.ctx).WithField("name", hdr.Name).Debug("layer entry ignored: resolves to root")
		return nil
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(hdr, dir, base)
	}

	pfd, err := a.parent(dir, true)
	if err != nil {
		return fmt.Errorf("resolve parent directory: %w", err)
	}
	defer a.release(pfd)
	return a.create(pfd, name, base, hdr, r)
}

// parent resolves dir (cleaned, relative) inside root; release the fd.
func (a *applier) parent(dir string, create bool) (int, error) {
	if dir == "" {
		return a.rootfd, nil
	}
	return a.res.resolveDir(dir, create)
}

func (a *applier) release(fd int) {
	if fd != a.rootfd {
		unix.Close(fd)
	}
}

// create makes the entry base inside the directory pfd.
func (a *applier) create(pfd int, name, base string, hdr *tar.Header, r io.Reader) error {
	mode := uint32(hdr.Mode) & 0o7777
	ts := entryTimes(hdr)

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		return a.createFile(pfd, base, hdr, r, mode, &ts)

	case tar.TypeDir:
		return a.createDir(pfd, name, base, hdr, mode, ts)

	case tar.TypeSymlink:
		err := unix.Symlinkat(hdr.Linkname, pfd, base)
		if err == unix.EEXIST {
			if err = a.replace(pfd, base); err == nil {
				err = unix.Symlinkat(hdr.Linkname, pfd, base)
			}
		}
		if err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return a.finishAt(pfd, base, hdr, 0, false, &ts)

	case tar.TypeLink:
		return a.createLink(pfd, base, hdr, mode, &ts)

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			kind = unix.S_IFCHR
		case tar.TypeBlock:
			kind = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		err := unix.Mknodat(pfd, base, kind|mode&0o777, dev)
		if err == unix.EEXIST {
			if err = a.replace(pfd, base); err == nil {
				err = unix.Mknodat(pfd, base, kind|mode&0o777, dev)
			}
		}
		if err == unix.EPERM && hdr.Typeflag != tar.TypeFifo {
			log.G(a.ctx).WithField("name", hdr.Name).Warn("device node in layer ignored: not permitted to create it")
			return nil
		}
		if err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		return a.finishAt(pfd, base, hdr, mode, true, &ts)

	default:
		return fmt.Errorf("entry type %q: %w", hdr.Typeflag, ErrInvalidLayer)
	}
}

// replace removes the existing entry at base so that a new one can take
// its name.
func (a *applier) replace(pfd int, base string) error {
	if err := removeAt(pfd, base); err != nil {
		return fmt.Errorf("replace existing entry: %w", err)
	}
	return nil
}

func (a *applier) createFile(pfd int, base string, hdr *tar.Header, r io.Reader, mode uint32, ts *[2]unix.Timespec) error {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// Created with its final permissions where the umask allows, so that
	// the usual file needs no chmod; setuid bits come after the chown.
	fd, err := unix.Openat(pfd, base, flags, mode&0o777)
	if err == unix.EEXIST {
		if err = a.replace(pfd, base); err == nil {
			fd, err = unix.Openat(pfd, base, flags, mode&0o777)
		}
	}
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	defer unix.Close(fd)

	var written int64
	for {
		n, rerr := r.Read(a.buf)
		if n > 0 {
			if err := writeAll(fd, a.buf[:n]); err != nil {
				return fmt.Errorf("write file: %w", err)
			}
			written += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read file data: %w", rerr)
		}
	}
	if written != hdr.Size {
		return fmt.Errorf("file data: %d bytes, header says %d: %w", written, hdr.Size, ErrInvalidLayer)
	}
	_, err = a.finishFd(fd, hdr, mode, ts)
	return err
}

func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (a *applier) createDir(pfd int, name, base string, hdr *tar.Header, mode uint32, ts [2]unix.Timespec) error {
	makeOpaque := false
	dirPerm := mode&0o777 | 0o700 // we must be able to fill it
	err := unix.Mkdirat(pfd, base, dirPerm)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			// A directory replacing an overlay whiteout must not let the
			// lower directory of that name show through.
			makeOpaque = a.opts.overlay && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
			if err = a.replace(pfd, base); err == nil {
				err = unix.Mkdirat(pfd, base, dirPerm)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	fd, err := openDir(pfd, base)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	if makeOpaque {
		if err := unix.Fsetxattr(fd, overlayOpaqueXattr, []byte{'y'}, 0); err != nil {
			return fmt.Errorf("set %s: %w", overlayOpaqueXattr, err)
		}
	}
	// Times later, once the children are in.
	st, err := a.finishFd(fd, hdr, mode, nil)
	if err != nil {
		return err
	}
	a.dirs = append(a.dirs, dirTimes{name: name, id: idOf(&st), ts: ts})
	return nil
}

func (a *applier) createLink(pfd int, base string, hdr *tar.Header, mode uint32, ts *[2]unix.Timespec) error {
	target := cleanName(hdr.Linkname)
	if target == "" {
		return fmt.Errorf("hardlink to root: %w", ErrInvalidLayer)
	}
	tdir, tbase := splitName(target)
	if strings.HasPrefix(tbase, whiteoutPrefix) {
		return fmt.Errorf("hardlink to whiteout %q: %w", short(hdr.Linkname), ErrInvalidLayer)
	}
	tfd, err := a.parent(tdir, false)
	if err != nil {
		if isNotExist(err) {
			return fmt.Errorf("hardlink target %q missing (%v): %w", short(hdr.Linkname), err, ErrInvalidLayer)
		}
		return fmt.Errorf("hardlink target %q: %w", short(hdr.Linkname), err)
	}
	defer a.release(tfd)

	// Flags 0: a symlink target is linked itself, never followed.
	err = unix.Linkat(tfd, tbase, pfd, base, 0)
	if err == unix.EEXIST {
		var st1, st2 unix.Stat_t
		if unix.Fstatat(tfd, tbase, &st1, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			unix.Fstatat(pfd, base, &st2, unix.AT_SYMLINK_NOFOLLOW) == nil && idOf(&st1) == idOf(&st2) {
			err = nil // already that very inode
		} else if err = a.replace(pfd, base); err == nil {
			err = unix.Linkat(tfd, tbase, pfd, base, 0)
		}
	}
	if err != nil {
		if err == unix.ENOENT {
			return fmt.Errorf("hardlink target %q missing: %w", short(hdr.Linkname), ErrInvalidLayer)
		}
		return fmt.Errorf("hardlink to %q: %w", short(hdr.Linkname), err)
	}
	return a.finishAt(pfd, base, hdr, mode, true, ts)
}

// finishFd applies owner, xattrs, mode and (unless ts is nil) times to the
// object open as fd, in that order: chown clears setuid bits and file
// capabilities. Owner and mode are only changed where they differ, which
// spares the common root-owned 0644/0755 file two inode updates.
func (a *applier) finishFd(fd int, hdr *tar.Header, mode uint32, ts *[2]unix.Timespec) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, err
	}
	chowned := false
	if !a.opts.noSameOwner && (int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid) {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return st, fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
		}
		chowned = true
	}
	if err := a.xattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }, true); err != nil {
		return st, err
	}
	if st.Mode&0o7777 != mode || (chowned && mode&0o6000 != 0) {
		if err := unix.Fchmod(fd, mode); err != nil {
			return st, fmt.Errorf("chmod %o: %w", mode, err)
		}
	}
	if ts != nil {
		if err := futimens(fd, ts); err != nil {
			return st, fmt.Errorf("set times: %w", err)
		}
	}
	if a.layer != nil {
		a.layer[idOf(&st)] = struct{}{}
	}
	return st, nil
}

// finishAt is finishFd for objects without an fd of their own (symlinks,
// devices, fifos, hardlinks): everything relative to pfd and never
// following base. A symlink's mode is never set.
func (a *applier) finishAt(pfd int, base string, hdr *tar.Header, mode uint32, chmod bool, ts *[2]unix.Timespec) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	chowned := false
	if !a.opts.noSameOwner && (int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid) {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
		}
		chowned = true
	}
	regOrDir := st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFDIR
	if err := a.xattrs(hdr, func(k string, v []byte) error { return unix.Lsetxattr(procPath(pfd, base), k, v, 0) }, regOrDir); err != nil {
		return err
	}
	if chmod && !isLink && (st.Mode&0o7777 != mode || (chowned && mode&0o6000 != 0)) {
		if err := lchmodat(pfd, base, mode); err != nil {
			return fmt.Errorf("chmod %o: %w", mode, err)
		}
	}
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	if a.layer != nil {
		a.layer[idOf(&st)] = struct{}{}
	}
	return nil
}

// xattrs applies the PAX SCHILY.xattr.* records of hdr through set.
func (a *applier) xattrs(hdr *tar.Header, set func(string, []byte) error, regOrDir bool) error {
	for key, value := range hdr.PAXRecords {
		if !strings.HasPrefix(key, paxSchilyXattr) {
			continue
		}
		key = key[len(paxSchilyXattr):]
		if isOverlayXattr(key) {
			log.G(a.ctx).WithField("name", hdr.Name).Warnf("xattr %s in layer ignored", key)
			continue
		}
		err := set(key, []byte(value))
		switch {
		case err == nil:
		case err == unix.ENOTSUP || err == unix.EOPNOTSUPP,
			(err == unix.EPERM || err == unix.EACCES) &&
				(strings.HasPrefix(key, "trusted.") || strings.HasPrefix(key, "security.")),
			err == unix.EPERM && strings.HasPrefix(key, "user.") && !regOrDir:
			// Unsupported here, privileged, or (user.*) impossible on this
			// kind of file.
			log.G(a.ctx).WithError(err).WithField("name", hdr.Name).Warnf("xattr %s in layer ignored", key)
		default:
			return fmt.Errorf("set xattr %s: %w", key, err)
		}
	}
	return nil
}

// whiteout handles ".wh.*" entries in the directory dir.
func (a *applier) whiteout(hdr *tar.Header, dir, base string) error {
	opaque := base == whiteoutOpaqueDir
	var target string
	if !opaque {
		if strings.HasPrefix(base, whiteoutMetaPrefix) {
			// Other AUFS metadata (.wh..wh.plnk, ...): meaningless here.
			return nil
		}
		target = base[len(whiteoutPrefix):]
		if target == "" || target == "." || target == ".." {
			return fmt.Errorf("whiteout %q: %w", base, ErrInvalidLayer)
		}
	}

	if !a.opts.overlay {
		pfd, err := a.parent(dir, false)
		if err != nil {
			if isNotExist(err) {
				return nil // nothing there to remove
			}
			return fmt.Errorf("resolve whiteout directory: %w", err)
		}
		defer a.release(pfd)
		if opaque {
			return a.opaqueNative(pfd)
		}
		return removeAt(pfd, target)
	}

	pfd, err := a.parent(dir, true)
	if err != nil {
		return fmt.Errorf("resolve whiteout directory: %w", err)
	}
	defer a.release(pfd)
	if opaque {
		fd, err := openDir(pfd, "")
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsetxattr(fd, overlayOpaqueXattr, []byte{'y'}, 0)
	}
	err = unix.Mknodat(pfd, target, unix.S_IFCHR, 0)
	if err == unix.EEXIST {
		if err = a.replace(pfd, target); err == nil {
			err = unix.Mknodat(pfd, target, unix.S_IFCHR, 0)
		}
	}
	if err != nil {
		return fmt.Errorf("whiteout device %q: %w", target, err)
	}
	if a.opts.noSameOwner {
		return nil
	}
	return unix.Fchownat(pfd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
}

// opaqueNative removes every child of the directory pfd that this layer
// did not create (recursing into those it did), once per directory.
func (a *applier) opaqueNative(pfd int) error {
	fd, err := openDir(pfd, "")
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if _, done := a.opaqued[idOf(&st)]; done {
		return nil
	}
	a.opaqued[idOf(&st)] = struct{}{}
	return removeChildren(fd, func(st *unix.Stat_t) bool {
		_, ok := a.layer[idOf(st)]
		return ok
	})
}

// restoreDirTimes sets the times of the layer's directories, now that
// nothing more is created in them, if the name still holds that directory.
func (a *applier) restoreDirTimes() error {
	for i := range a.dirs {
		d := &a.dirs[i]
		dir, base := splitName(d.name)
		pfd, err := a.parent(dir, false)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return fmt.Errorf("directory times of %q: %w", short(d.name), err)
		}
		var st unix.Stat_t
		err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && idOf(&st) == d.id {
			err = unix.UtimesNanoAt(pfd, base, d.ts[:], unix.AT_SYMLINK_NOFOLLOW)
		} else if isNotExist(err) {
			err = nil
		}
		a.release(pfd)
		if err != nil {
			return fmt.Errorf("directory times of %q: %w", short(d.name), err)
		}
	}
	return nil
}

// implicitDir is called for each directory the resolver creates because
// the layer has no entry for it: it belongs to the layer, and copies its
// attributes from the lower dirs of WithParents.
func (a *applier) implicitDir(fd int, rel string) error {
	if a.layer != nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		a.layer[idOf(&st)] = struct{}{}
	}
	if len(a.opts.parents) == 0 {
		return nil
	}
	if !a.parentsOK {
		a.parentsOK = true
		for _, p := range a.opts.parents {
			pfd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open parent layer %q: %w", p, err)
			}
			a.parentFds = append(a.parentFds, pfd)
		}
	}
	for _, lower := range a.parentFds {
		lr := resolver{rootfd: lower, manual: a.opts.manual}
		lfd, err := lr.resolveDir(rel, false)
		if err != nil {
			if isNotExist(err) {
				// Missing here, or shadowed by a non-directory (ENOTDIR):
				// a missing one may exist further down; a non-directory
				// replaced it.
				if errors.Is(err, unix.ENOTDIR) {
					return nil
				}
				continue
			}
			return fmt.Errorf("parent layer directory %q: %w", rel, err)
		}
		err = copyDirInfo(lfd, fd)
		unix.Close(lfd)
		return err
	}
	log.G(a.ctx).Debugf("parent directory %q not in lower layers: default permissions used", rel)
	return nil
}

// copyDirInfo copies owner, mode, xattrs and times from the directory src
// to the directory dst (both O_PATH fds).
func copyDirInfo(src, dst int) error {
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return err
	}
	rsrc, err := openDir(src, "")
	if err != nil {
		return err
	}
	defer unix.Close(rsrc)
	rdst, err := openDir(dst, "")
	if err != nil {
		return err
	}
	defer unix.Close(rdst)
	if err := unix.Fchown(rdst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	xs, err := readXattrs(src, "", func(k string) bool { return !isOverlayXattr(k) })
	if err != nil {
		return err
	}
	for k, v := range xs {
		if err := unix.Fsetxattr(rdst, k, []byte(v), 0); err != nil && err != unix.ENOTSUP && err != unix.EOPNOTSUPP {
			return fmt.Errorf("copy xattr %s: %w", k, err)
		}
	}
	if err := unix.Fchmod(rdst, st.Mode&0o7777); err != nil {
		return err
	}
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	return futimens(rdst, &ts)
}

func (a *applier) closeParents() {
	for _, fd := range a.parentFds {
		unix.Close(fd)
	}
}

var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, 1<<63-1)
)

// boundTime maps times the kernel cannot store to the epoch, as containerd.
func boundTime(t time.Time) time.Time {
	if t.Before(minTime) || t.After(maxTime) {
		return minTime
	}
	return t
}

// entryTimes are the access and modification times of hdr: atime is the
// later of its access time and its mtime (a zero access time means mtime).
func entryTimes(hdr *tar.Header) [2]unix.Timespec {
	atime := hdr.AccessTime
	if atime.Before(hdr.ModTime) {
		atime = hdr.ModTime
	}
	return [2]unix.Timespec{timespec(boundTime(atime)), timespec(boundTime(hdr.ModTime))}
}

// short bounds a layer-supplied name for error messages.
func short(name string) string {
	const max = 160
	if len(name) <= max {
		return name
	}
	return name[:max] + "…"
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
