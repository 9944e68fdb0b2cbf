//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Hostile fixtures make Apply warn a lot; keep test output readable.
	_ = log.SetLevel("error")
	os.Exit(m.Run())
}

// testTime is the default mtime of fixture entries.
var testTime = time.Unix(1_600_000_000, 0)

// entry is one tar entry of a fixture layer.
type entry struct {
	hdr  tar.Header
	body string
}

func newEntry(typ byte, name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: testTime, Format: tar.FormatPAX}}
}

func F(name, body string) entry {
	e := newEntry(tar.TypeReg, name, 0o644)
	e.body = body
	e.hdr.Size = int64(len(body))
	return e
}
func D(name string) entry { return newEntry(tar.TypeDir, name, 0o755) }
func L(name, target string) entry {
	e := newEntry(tar.TypeSymlink, name, 0o777)
	e.hdr.Linkname = target
	return e
}
func H(name, target string) entry {
	e := newEntry(tar.TypeLink, name, 0o644)
	e.hdr.Linkname = target
	return e
}
func W(name string) entry    { return F(name, "") }
func Fifo(name string) entry { return newEntry(tar.TypeFifo, name, 0o644) }
func Char(name string, maj, min int64) entry {
	e := newEntry(tar.TypeChar, name, 0o666)
	e.hdr.Devmajor, e.hdr.Devminor = maj, min
	return e
}
func Block(name string, maj, min int64) entry {
	e := newEntry(tar.TypeBlock, name, 0o660)
	e.hdr.Devmajor, e.hdr.Devminor = maj, min
	return e
}

func (e entry) mode(m int64) entry       { e.hdr.Mode = m; return e }
func (e entry) owner(uid, gid int) entry { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }
func (e entry) mtime(t time.Time) entry  { e.hdr.ModTime = t; return e }
func (e entry) atime(t time.Time) entry  { e.hdr.AccessTime = t; return e }
func (e entry) xattr(k, v string) entry {
	m := map[string]string{}
	for k, v := range e.hdr.PAXRecords {
		m[k] = v
	}
	m[paxSchilyXattr+k] = v
	e.hdr.PAXRecords = m
	return e
}

// layer builds a tar of entries.
func layer(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("fixture header %q: %v", hdr.Name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatalf("fixture body %q: %v", hdr.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func applyBytes(t testing.TB, root string, b []byte, opts ...ApplyOpt) error {
	t.Helper()
	_, _, err := Apply(context.Background(), root, bytes.NewReader(b), opts...)
	return err
}

func mustApply(t testing.TB, root string, b []byte, opts ...ApplyOpt) {
	t.Helper()
	if err := applyBytes(t, root, b, opts...); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// node is what a tree snapshot records of one entry.
type node struct {
	Mode        uint32
	Uid, Gid    uint32
	Size        int64
	Mtime       int64 // ns
	Ctime       int64 // ns
	Nlink       uint64
	Rdev        uint64
	Ino         uint64
	Content     string // sha256 of regular files
	Link        string
	Xattrs      string
	IsDirectory bool
}

// snapshot records the tree at dir (not following symlinks), skipping the
// subtree at skip (a path relative to dir). Contents are read with
// O_NOATIME so that snapshotting does not change what it observes.
func snapshot(t testing.TB, dir, skip string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skip != "" && rel == skip {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{
			Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size,
			Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Nlink: uint64(st.Nlink), Rdev: st.Rdev, Ino: st.Ino,
			IsDirectory: st.Mode&unix.S_IFMT == unix.S_IFDIR,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			f := os.NewFile(uintptr(fd), p)
			h := sha256.New()
			_, err = h.Write(readAllFile(t, f))
			f.Close()
			if err != nil {
				return err
			}
			n.Content = hex.EncodeToString(h.Sum(nil))
		case unix.S_IFLNK:
			n.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
		}
		n.Xattrs = xattrString(t, p)
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

func readAllFile(t testing.TB, f *os.File) []byte {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return buf.Bytes()
}

func xattrString(t testing.TB, p string) string {
	m, err := lxattrs(p)
	if err != nil {
		t.Fatalf("xattrs of %s: %v", p, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, m[k])
	}
	return b.String()
}

// lxattrs reads all xattrs of p without following a symlink at p.
func lxattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:sz]), "\x00") {
		if k == "" {
			continue
		}
		v, err := lgetxattr(p, k)
		if err != nil {
			return nil, err
		}
		out[k] = string(v)
	}
	return out, nil
}

// compareTrees reports the differences between two snapshots, comparing
// only what fields selects.
func compareTrees(want, got map[string]node, fields func(n node) node) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: missing", p))
			continue
		}
		if fw, fg := fields(w), fields(g); fw != fg {
			diffs = append(diffs, fmt.Sprintf("%s:\n  want %+v\n  got  %+v", p, fw, fg))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected", p))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// allFields compares everything but inode numbers and atimes (reading
// directories moves those).
func allFields(n node) node { n.Ino = 0; return n }

func requireRoot(t testing.TB) { testutil.RequireRoot(t) }

func lstat(t testing.TB, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &st
}

func exists(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}
