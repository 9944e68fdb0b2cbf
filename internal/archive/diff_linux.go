//go:build linux

package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// Diff writes to w a tar of the changes that turn the tree lower into the
// tree upper: added and changed entries, OCI whiteouts for removed ones,
// opaque markers for directories whose lower children are all gone. The
// order is deterministic (lexical, parents before children). See the
// package documentation for what is compared and carried.
func Diff(ctx context.Context, lower, upper string, w io.Writer) error {
	lfd, err := unix.Open(lower, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open diff lower %q: %w", lower, err)
	}
	defer unix.Close(lfd)
	ufd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open diff upper %q: %w", upper, err)
	}
	defer unix.Close(ufd)

	dw := newDiffWriter(ctx, w)
	if err := dw.diffDir(lfd, ufd, ""); err != nil {
		return err
	}
	return dw.close()
}

// DiffOverlayUpper writes to w the layer held by an overlayfs upper
// directory, without looking at the lower ones: 0/0 character devices (and
// files with the trusted.overlay.whiteout xattr) become OCI whiteouts,
// directories with trusted.overlay.opaque=y get an opaque marker, and
// everything else is written as is. An upper dir that depends on its lower
// dirs for content (redirect_dir or metacopy xattrs) is refused.
func DiffOverlayUpper(ctx context.Context, upper string, w io.Writer) error {
	ufd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open overlay upper %q: %w", upper, err)
	}
	defer unix.Close(ufd)

	dw := newDiffWriter(ctx, w)
	xs, err := readXattrs(ufd, "", func(string) bool { return true })
	if err != nil {
		return fmt.Errorf("xattrs of overlay upper: %w", err)
	}
	if overlayOpaque(xs) {
		if err := dw.marker("", whiteoutOpaqueDir); err != nil {
			return err
		}
	}
	if err := dw.overlayDir(ufd, ""); err != nil {
		return err
	}
	return dw.close()
}

type diffWriter struct {
	ctx context.Context
	bw  *bufio.Writer
	tw  *tar.Writer
	buf []byte

	// parents is the stack of directories above the current one, written
	// lazily: a directory whose own attributes did not change is written
	// only before the first change below it.
	parents []*pendingDir
	// links maps an inode to the name it was first written as; refs holds
	// unchanged names of multiply linked inodes not yet written.
	links map[fileID]string
	refs  map[fileID][]string
}

type pendingDir struct {
	hdr     *tar.Header
	written bool
}

func newDiffWriter(ctx context.Context, w io.Writer) *diffWriter {
	bw := bufio.NewWriterSize(w, 256<<10)
	return &diffWriter{
		ctx:   ctx,
		bw:    bw,
		tw:    tar.NewWriter(bw),
		buf:   make([]byte, 256<<10),
		links: map[fileID]string{},
		refs:  map[fileID][]string{},
	}
}

func (dw *diffWriter) close() error {
	if err := dw.tw.Close(); err != nil {
		return fmt.Errorf("close layer tar: %w", err)
	}
	return dw.bw.Flush()
}

func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// write writes hdr after the parents not written yet.
func (dw *diffWriter) write(hdr *tar.Header) error {
	for _, p := range dw.parents {
		if !p.written {
			p.written = true
			if err := dw.tw.WriteHeader(p.hdr); err != nil {
				return fmt.Errorf("write layer entry %q: %w", p.hdr.Name, err)
			}
		}
	}
	if err := dw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write layer entry %q: %w", hdr.Name, err)
	}
	return nil
}

// marker writes the whiteout (or opaque marker) base in the directory rel.
func (dw *diffWriter) marker(rel, base string) error {
	epoch := time.Unix(0, 0).UTC()
	return dw.write(&tar.Header{
		Typeflag:   tar.TypeReg,
		Name:       join(rel, base),
		ModTime:    epoch,
		AccessTime: epoch,
		ChangeTime: epoch,
		Format:     tar.FormatPAX,
	})
}

// stat is one directory entry with its attributes.
type stat struct {
	st     unix.Stat_t
	xattrs map[string]string // all of them
}

func statAt(dirfd int, name string) (*stat, error) {
	s := &stat{}
	if err := unix.Fstatat(dirfd, name, &s.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	xs, err := readXattrs(dirfd, name, func(string) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("xattrs of %q: %w", name, err)
	}
	s.xattrs = xs
	return s, nil
}

func (s *stat) kind() uint32 { return s.st.Mode & unix.S_IFMT }

// header builds the tar header of the entry name in dirfd, named p.
func (dw *diffWriter) header(dirfd int, name, p string, s *stat) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    p,
		Mode:    int64(s.st.Mode & 0o7777),
		Uid:     int(s.st.Uid),
		Gid:     int(s.st.Gid),
		ModTime: time.Unix(s.st.Mtim.Sec, 0),
		Format:  tar.FormatPAX,
	}
	switch s.kind() {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = s.st.Size
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		target, err := readlinkAt(dirfd, name)
		if err != nil {
			return nil, err
		}
		hdr.Linkname = target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if s.kind() == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(s.st.Rdev))
		hdr.Devminor = int64(unix.Minor(s.st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, nil // sockets are not carried
	}
	for k, v := range s.xattrs {
		if diffXattr(k) {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxSchilyXattr+k] = v
		}
	}
	return hdr, nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", fmt.Errorf("readlink %q: %w", name, err)
	}
	return string(buf[:n]), nil
}

// diffDir writes the changes inside the directory rel; lfd is -1 where
// lower has no such directory.
func (dw *diffWriter) diffDir(lfd, ufd int, rel string) error {
	unames, err := readDirNames(ufd)
	if err != nil {
		return fmt.Errorf("read upper directory %q: %w", rel, err)
	}
	var lnames []string
	if lfd >= 0 {
		if lnames, err = readDirNames(lfd); err != nil {
			return fmt.Errorf("read lower directory %q: %w", rel, err)
		}
	}
	if len(lnames) >= 2 && !shareName(lnames, unames) {
		// Everything below is gone: one opaque marker instead of a
		// whiteout each.
		if err := dw.marker(rel, whiteoutOpaqueDir); err != nil {
			return err
		}
		lfd, lnames = -1, nil
	}

	i, j := 0, 0
	for i < len(lnames) || j < len(unames) {
		if err := dw.ctx.Err(); err != nil {
			return err
		}
		switch {
		case j >= len(unames) || (i < len(lnames) && lnames[i] < unames[j]):
			if err := dw.removed(lfd, rel, lnames[i]); err != nil {
				return err
			}
			i++
		case i >= len(lnames) || unames[j] < lnames[i]:
			if err := dw.entry(-1, ufd, rel, unames[j]); err != nil {
				return err
			}
			j++
		default:
			if err := dw.entry(lfd, ufd, rel, unames[j]); err != nil {
				return err
			}
			i++
			j++
		}
	}
	return nil
}

// shareName reports whether two sorted name lists have a name in common.
func shareName(a, b []string) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			return true
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return false
}

// removed writes the whiteout of a lower entry gone from upper. Sockets
// were never carried, so their removal is not either.
func (dw *diffWriter) removed(lfd int, rel, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(lfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return nil
	}
	return dw.marker(rel, whiteoutPrefix+name)
}

// entry writes what changed about the upper entry name; lfd is -1 when
// lower has no directory here, else the entry may or may not exist there.
func (dw *diffWriter) entry(lfd, ufd int, rel, name string) error {
	u, err := statAt(ufd, name)
	if err != nil {
		if err == unix.ENOENT {
			return nil // gone while walking
		}
		return fmt.Errorf("stat upper %q: %w", join(rel, name), err)
	}
	var l *stat
	if lfd >= 0 {
		if l, err = statAt(lfd, name); err != nil && err != unix.ENOENT {
			return fmt.Errorf("stat lower %q: %w", join(rel, name), err)
		}
		if l != nil && l.kind() == unix.S_IFSOCK {
			l = nil
		}
	}
	p := join(rel, name)
	if u.kind() == unix.S_IFSOCK {
		if l != nil {
			return dw.marker(rel, whiteoutPrefix+name)
		}
		return nil
	}
	hdr, err := dw.header(ufd, name, p, u)
	if err != nil {
		return err
	}

	if u.kind() != unix.S_IFDIR {
		changed := true
		if l != nil && l.kind() == u.kind() {
			same, err := sameFile(lfd, ufd, name, l, u)
			if err != nil {
				return fmt.Errorf("compare %q: %w", p, err)
			}
			changed = !same
		}
		return dw.file(ufd, name, hdr, u, changed)
	}

	// A directory: written now if new or changed, else only before a
	// change below it.
	sub, err := openDir(ufd, name)
	if err != nil {
		return fmt.Errorf("open upper %q: %w", p, err)
	}
	defer unix.Close(sub)
	lsub := -1
	pd := &pendingDir{hdr: hdr}
	if l != nil && l.kind() == unix.S_IFDIR {
		if lsub, err = openDir(lfd, name); err != nil {
			return fmt.Errorf("open lower %q: %w", p, err)
		}
		defer unix.Close(lsub)
	}
	if lsub < 0 || !sameAttrs(l, u) {
		if err := dw.write(hdr); err != nil {
			return err
		}
		pd.written = true
	}
	dw.parents = append(dw.parents, pd)
	defer func() { dw.parents = dw.parents[:len(dw.parents)-1] }()
	return dw.diffDir(lsub, sub, p)
}

// file writes a non-directory, keeping hardlinks: the first changed name
// of an inode carries the data, every other name links to it.
func (dw *diffWriter) file(dirfd int, name string, hdr *tar.Header, s *stat, changed bool) error {
	if s.st.Nlink > 1 {
		id := idOf(&s.st)
		if src, ok := dw.links[id]; ok {
			return dw.write(linkHeader(hdr, src))
		}
		if !changed {
			dw.refs[id] = append(dw.refs[id], hdr.Name)
			return nil
		}
		if err := dw.content(dirfd, name, hdr); err != nil {
			return err
		}
		dw.links[id] = hdr.Name
		for _, ref := range dw.refs[id] {
			l := linkHeader(hdr, hdr.Name)
			l.Name = ref
			if err := dw.tw.WriteHeader(l); err != nil {
				return fmt.Errorf("write layer entry %q: %w", ref, err)
			}
		}
		delete(dw.refs, id)
		return nil
	}
	if !changed {
		return nil
	}
	return dw.content(dirfd, name, hdr)
}

func linkHeader(hdr *tar.Header, target string) *tar.Header {
	l := *hdr
	l.Typeflag = tar.TypeLink
	l.Linkname = target
	l.Size = 0
	return &l
}

// content writes hdr and, for a regular file, its data.
func (dw *diffWriter) content(dirfd int, name string, hdr *tar.Header) error {
	if err := dw.write(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", hdr.Name, err)
	}
	defer unix.Close(fd)
	remaining := hdr.Size
	for remaining > 0 {
		b := dw.buf
		if int64(len(b)) > remaining {
			b = b[:remaining]
		}
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %q: %w", hdr.Name, err)
		}
		if n == 0 {
			return fmt.Errorf("read %q: file shrank while diffing", hdr.Name)
		}
		if _, err := dw.tw.Write(b[:n]); err != nil {
			return fmt.Errorf("write layer entry %q: %w", hdr.Name, err)
		}
		remaining -= int64(n)
	}
	return nil
}

// sameAttrs compares what a directory entry carries besides content.
func sameAttrs(l, u *stat) bool {
	if l.st.Mode != u.st.Mode || l.st.Uid != u.st.Uid || l.st.Gid != u.st.Gid || l.st.Rdev != u.st.Rdev {
		return false
	}
	n := 0
	for k, v := range u.xattrs {
		if !diffXattr(k) {
			continue
		}
		n++
		if lv, ok := l.xattrs[k]; !ok || lv != v {
			return false
		}
	}
	for k := range l.xattrs {
		if diffXattr(k) {
			n--
		}
	}
	return n == 0
}

// sameFile reports whether the non-directory name is unchanged, as
// continuity does: attributes, size, mtime seconds, and content when both
// mtimes lack nanoseconds (as after a round trip through a tar).
func sameFile(lfd, ufd int, name string, l, u *stat) (bool, error) {
	if idOf(&l.st) == idOf(&u.st) {
		return true, nil
	}
	if !sameAttrs(l, u) || l.st.Size != u.st.Size {
		return false, nil
	}
	if l.kind() == unix.S_IFLNK {
		lt, err := readlinkAt(lfd, name)
		if err != nil {
			return false, err
		}
		ut, err := readlinkAt(ufd, name)
		if err != nil || lt != ut {
			return false, err
		}
	}
	if l.st.Mtim.Sec != u.st.Mtim.Sec {
		return false, nil
	}
	if l.st.Mtim.Nsec != 0 || u.st.Mtim.Nsec != 0 {
		return l.st.Mtim.Nsec == u.st.Mtim.Nsec, nil
	}
	if l.kind() != unix.S_IFREG || l.st.Size == 0 {
		return true, nil
	}
	return sameContent(lfd, ufd, name)
}

func sameContent(lfd, ufd int, name string) (bool, error) {
	open := func(dirfd int) (*bufio.Reader, func(), error) {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, err
		}
		return bufio.NewReaderSize(fdReader(fd), 64<<10), func() { unix.Close(fd) }, nil
	}
	a, ca, err := open(lfd)
	if err != nil {
		return false, err
	}
	defer ca()
	b, cb, err := open(ufd)
	if err != nil {
		return false, err
	}
	defer cb()
	ba := make([]byte, 64<<10)
	bb := make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}

// fdReader reads from a raw fd.
type fdReader int

func (f fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(f), p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// overlayOpaque reports an overlayfs opaque directory.
func overlayOpaque(xs map[string]string) bool {
	return xs["trusted.overlay.opaque"] == "y" || xs["user.overlay.opaque"] == "y"
}

// overlayDir writes the upper directory rel and everything below it.
func (dw *diffWriter) overlayDir(ufd int, rel string) error {
	names, err := readDirNames(ufd)
	if err != nil {
		return fmt.Errorf("read overlay upper directory %q: %w", rel, err)
	}
	for _, name := range names {
		if err := dw.ctx.Err(); err != nil {
			return err
		}
		p := join(rel, name)
		u, err := statAt(ufd, name)
		if err != nil {
			if err == unix.ENOENT {
				continue
			}
			return fmt.Errorf("stat overlay upper %q: %w", p, err)
		}
		for _, k := range []string{"trusted.overlay.redirect", "trusted.overlay.metacopy", "user.overlay.redirect", "user.overlay.metacopy"} {
			if _, ok := u.xattrs[k]; ok {
				return fmt.Errorf("overlay upper %q has %s: its content lives in the lower dirs, use Diff", p, k)
			}
		}
		isWhiteout := (u.kind() == unix.S_IFCHR && u.st.Rdev == 0) ||
			(u.kind() == unix.S_IFREG && u.st.Size == 0 && hasAny(u.xattrs, "trusted.overlay.whiteout", "user.overlay.whiteout"))
		if isWhiteout {
			if err := dw.marker(rel, whiteoutPrefix+name); err != nil {
				return err
			}
			continue
		}
		hdr, err := dw.header(ufd, name, p, u)
		if err != nil {
			return err
		}
		if hdr == nil {
			continue
		}
		if u.kind() != unix.S_IFDIR {
			if err := dw.file(ufd, name, hdr, u, true); err != nil {
				return err
			}
			continue
		}
		if err := dw.write(hdr); err != nil {
			return err
		}
		if overlayOpaque(u.xattrs) {
			if err := dw.marker(p, whiteoutOpaqueDir); err != nil {
				return err
			}
		}
		sub, err := openDir(ufd, name)
		if err != nil {
			return fmt.Errorf("open overlay upper %q: %w", p, err)
		}
		err = dw.overlayDir(sub, p)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

func hasAny(xs map[string]string, keys ...string) bool {
	for _, k := range keys {
		if _, ok := xs[k]; ok {
			return true
		}
	}
	return false
}
