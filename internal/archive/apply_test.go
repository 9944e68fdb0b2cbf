//go:build linux

package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// capBlob is a valid VFS_CAP_REVISION_2 security.capability value
// granting cap_net_raw (effective).
func capBlob() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|1)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_RAW)
	return string(b)
}

func randomBytes(n int, seed int64) string {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return string(b)
}

func TestApplyEntryTypes(t *testing.T) {
	requireRoot(t)
	t1, t2, t3, t4, t5 := time.Unix(1_500_000_000, 1), time.Unix(1_500_000_100, 0), time.Unix(1_400_000_000, 500), time.Unix(1_450_000_000, 0), time.Unix(1_300_000_000, 7)
	big := randomBytes(3<<20+17, 1)
	entries := []entry{
		D("etc/").mode(0o750).owner(1000, 1001).mtime(t1).atime(t2),
		F("etc/passwd", "root:x:0:0").owner(0, 0).mtime(t3).atime(t4),
		L("etc/localtime", "/usr/share/zoneinfo/UTC").owner(1002, 1003).mtime(t5),
		F("etc/xattrs", "x").xattr("user.foo", "bar").xattr("trusted.bar", "baz"),
		D("etc/xd/").xattr("user.dir", "1"),
		D("bin/"),
		F("bin/su", "elf-su").mode(0o4755),
		F("bin/sg", "elf-sg").mode(0o2755).owner(0, 50),
		F("bin/ping", "elf-ping").mode(0o755).owner(1000, 1000).xattr("security.capability", capBlob()),
		H("bin/su2", "bin/su").mode(0o4755),
		D("tmp/").mode(0o1777),
		D("shared/").mode(0o2775).owner(0, 100),
		Char("dev/null", 1, 3).mode(0o666),
		Block("dev/loop0", 7, 0).mode(0o660).owner(0, 6),
		Fifo("run/fifo").mode(0o600).owner(1000, 1000),
		F("deep/implicit/file", "implicit"),
		F("big", big),
		F("empty", ""),
		F("etc/later", "later"), // after etc/: etc's mtime must still be t1
	}
	root := t.TempDir()
	mustApply(t, root, layer(t, entries...))

	type want struct {
		kind     uint32
		mode     uint32
		uid, gid uint32
		mtime    *time.Time
		atime    *time.Time
		rdev     uint64
	}
	checks := map[string]want{
		"etc":                {kind: unix.S_IFDIR, mode: 0o750, uid: 1000, gid: 1001, mtime: &t1, atime: &t2},
		"etc/passwd":         {kind: unix.S_IFREG, mode: 0o644, mtime: &t3, atime: &t4},
		"etc/localtime":      {kind: unix.S_IFLNK, mode: 0o777, uid: 1002, gid: 1003, mtime: &t5},
		"bin/su":             {kind: unix.S_IFREG, mode: 0o4755},
		"bin/sg":             {kind: unix.S_IFREG, mode: 0o2755, gid: 50},
		"bin/ping":           {kind: unix.S_IFREG, mode: 0o755, uid: 1000, gid: 1000},
		"tmp":                {kind: unix.S_IFDIR, mode: 0o1777},
		"shared":             {kind: unix.S_IFDIR, mode: 0o2775, gid: 100},
		"dev/null":           {kind: unix.S_IFCHR, mode: 0o666, rdev: unix.Mkdev(1, 3)},
		"dev/loop0":          {kind: unix.S_IFBLK, mode: 0o660, gid: 6, rdev: unix.Mkdev(7, 0)},
		"run/fifo":           {kind: unix.S_IFIFO, mode: 0o600, uid: 1000, gid: 1000},
		"deep":               {kind: unix.S_IFDIR, mode: 0o755},
		"deep/implicit":      {kind: unix.S_IFDIR, mode: 0o755},
		"deep/implicit/file": {kind: unix.S_IFREG, mode: 0o644, mtime: &testTime},
	}
	// Stat everything before reading contents: reading moves atimes.
	for p, w := range checks {
		st := lstat(t, filepath.Join(root, p))
		if st.Mode&unix.S_IFMT != w.kind || st.Mode&0o7777 != w.mode || st.Uid != w.uid || st.Gid != w.gid || st.Rdev != w.rdev {
			t.Errorf("%s: mode %o uid %d gid %d rdev %x, want %o|%o %d %d %x", p, st.Mode, st.Uid, st.Gid, st.Rdev, w.kind, w.mode, w.uid, w.gid, w.rdev)
		}
		if w.mtime != nil && st.Mtim.Nano() != w.mtime.UnixNano() {
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(0, st.Mtim.Nano()), *w.mtime)
		}
		if w.atime != nil && st.Atim.Nano() != w.atime.UnixNano() {
			t.Errorf("%s: atime %v, want %v", p, time.Unix(0, st.Atim.Nano()), *w.atime)
		}
	}
	if a, b := lstat(t, filepath.Join(root, "bin/su")), lstat(t, filepath.Join(root, "bin/su2")); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("bin/su2 is not a hardlink of bin/su (inodes %d %d, nlink %d)", a.Ino, b.Ino, a.Nlink)
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/localtime")); err != nil || target != "/usr/share/zoneinfo/UTC" {
		t.Errorf("etc/localtime -> %q, %v", target, err)
	}
	xattrWant := map[string]map[string]string{
		"etc/xattrs": {"user.foo": "bar", "trusted.bar": "baz"},
		"etc/xd":     {"user.dir": "1"},
		"bin/ping":   {"security.capability": capBlob()}, // survives the chown before it
	}
	for p, w := range xattrWant {
		got, err := lxattrs(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%s: xattr %s = %q, want %q", p, k, got[k], v)
			}
		}
	}
	contents := map[string]string{"etc/passwd": "root:x:0:0", "bin/su2": "elf-su", "big": big, "empty": "", "etc/later": "later", "deep/implicit/file": "implicit"}
	for p, c := range contents {
		if got := readFile(t, filepath.Join(root, p)); got != c {
			t.Errorf("%s: content differs (%d bytes, want %d)", p, len(got), len(c))
		}
	}
}

func TestApplyReplace(t *testing.T) {
	requireRoot(t)
	for _, m := range applyModes() {
		if m.overlay {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			root := t.TempDir()
			mustApply(t, root, layer(t,
				D("a/"), F("a/keep", "k"),
				F("f2d", "x"),
				D("d2f/"), F("d2f/child", "c"), D("d2f/sub/"), F("d2f/sub/c", "c"),
				L("l2f", "f2d"),
				F("f2l", "y"),
				D("d2l/"), F("d2l/c", "c"),
				F("hard", "h"), H("hard2", "hard"),
			), m.opts...)
			mustApply(t, root, layer(t,
				D("a/").mode(0o700), F("a/new", "n"),
				D("f2d/"), F("f2d/c", "c"),
				F("d2f", "now a file"),
				F("l2f", "file"),
				L("f2l", "a"),
				L("d2l", "a"),
				F("hard", "new"),
			), m.opts...)
			if st := lstat(t, filepath.Join(root, "a")); st.Mode&0o777 != 0o700 {
				t.Errorf("a: mode %o, want the merged directory to take 0700", st.Mode&0o777)
			}
			for p, c := range map[string]string{"a/keep": "k", "a/new": "n", "f2d/c": "c", "d2f": "now a file", "l2f": "file", "hard": "new", "hard2": "h"} {
				if got := readFile(t, filepath.Join(root, p)); got != c {
					t.Errorf("%s = %q, want %q", p, got, c)
				}
			}
			for p, target := range map[string]string{"f2l": "a", "d2l": "a"} {
				if got, err := os.Readlink(filepath.Join(root, p)); err != nil || got != target {
					t.Errorf("%s -> %q (%v), want %q", p, got, err, target)
				}
			}
			if st := lstat(t, filepath.Join(root, "l2f")); st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("l2f is %o, want a regular file", st.Mode)
			}
		})
	}
}

// walkNames lists every path under root.
func walkNames(t *testing.T, root string) []string {
	t.Helper()
	var names []string
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." {
			names = append(names, rel)
		}
		return nil
	})
	return names
}

func TestApplyWhiteoutsNative(t *testing.T) {
	requireRoot(t)
	for _, m := range applyModes() {
		if m.overlay {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			root := t.TempDir()
			mustApply(t, root, layer(t,
				D("a/"), F("a/x", "x"), F("a/y", "y"),
				D("b/"), F("b/old1", "o"), D("b/olddir/"), F("b/olddir/f", "f"),
				F("c", "c"),
				D("d/"), F("d/old", "o"),
				D("e/"), D("e/sub/"), F("e/sub/old", "o"),
				D("gone/"), F("gone/f", "f"),
				F("f/.hidden", "h"),
			), m.opts...)
			mustApply(t, root, layer(t,
				W(".wh.c"),
				W("a/.wh.x"),
				W("a/.wh.nothere"),
				D("b/"), W("b/.wh..wh..opq"), F("b/new", "n"),
				D("d/"), F("d/keep", "k"), D("d/kdir/"), F("d/kdir/k", "k"), W("d/.wh..wh..opq"),
				D("e/"), D("e/sub/"), F("e/sub/new", "n"), W("e/.wh..wh..opq"),
				F("g/implicit/f", "i"), W("g/.wh..wh..opq"),
				W(".wh.gone"),
				W("nonexist/.wh.x"),
				W("f/.wh..wh.plnk"),
			), m.opts...)
			got := strings.Join(walkNames(t, root), " ")
			want := "a a/y b b/new d d/kdir d/kdir/k d/keep e e/sub e/sub/new f f/.hidden g g/implicit g/implicit/f"
			if got != want {
				t.Errorf("tree after whiteouts:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestApplyOverlayWhiteouts(t *testing.T) {
	requireRoot(t)
	lower := t.TempDir()
	if err := os.Mkdir(filepath.Join(lower, "p"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(lower, "p"), 7, 8); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"user.low": "1", "trusted.overlay.opaque": "y"} {
		if err := unix.Setxattr(filepath.Join(lower, "p"), k, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	empty := t.TempDir()

	for _, m := range applyModes() {
		if !m.overlay {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			root := t.TempDir()
			opts := append([]ApplyOpt{WithParents(empty, lower)}, m.opts...)
			mustApply(t, root, layer(t,
				W("a/.wh.x"),
				W(".wh.c").owner(5, 5),
				D("b/"), W("b/.wh..wh..opq"), F("b/new", "n"),
				W(".wh.r"), D("r/"), F("r/n", "n"),
				F("p/implicit", "x"),
				F("q/implicit", "x"),
				F("o", "o").xattr("trusted.overlay.redirect", "/etc"),
			), opts...)
			for _, p := range []string{"a/x", "c", "r"} {
				st := lstat(t, filepath.Join(root, p))
				if p == "r" {
					if st.Mode&unix.S_IFMT != unix.S_IFDIR {
						t.Errorf("r is %o, want a directory", st.Mode)
					}
					continue
				}
				if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
					t.Errorf("%s is %o rdev %x, want a 0/0 character device", p, st.Mode, st.Rdev)
				}
			}
			if st := lstat(t, filepath.Join(root, "c")); st.Uid != 5 || st.Gid != 5 {
				t.Errorf("c owner %d:%d, want 5:5", st.Uid, st.Gid)
			}
			for p, opaque := range map[string]bool{"b": true, "r": true, "p": false, "q": false, "a": false} {
				xs, err := lxattrs(filepath.Join(root, p))
				if err != nil {
					t.Fatal(err)
				}
				if (xs["trusted.overlay.opaque"] == "y") != opaque {
					t.Errorf("%s: trusted.overlay.opaque = %q, want opaque=%v", p, xs["trusted.overlay.opaque"], opaque)
				}
				if p == "p" && xs["user.low"] != "1" {
					t.Errorf("p: xattrs %v, want user.low copied from the lower dir", xs)
				}
			}
			if xs, _ := lxattrs(filepath.Join(root, "o")); xs["trusted.overlay.redirect"] != "" {
				t.Errorf("o: a layer set trusted.overlay.redirect")
			}
			if st := lstat(t, filepath.Join(root, "p")); st.Mode&0o7777 != 0o700 || st.Uid != 7 || st.Gid != 8 {
				t.Errorf("p: mode %o owner %d:%d, want 0700 7:8 from the lower dir", st.Mode&0o7777, st.Uid, st.Gid)
			}
			if st := lstat(t, filepath.Join(root, "q")); st.Mode&0o7777 != 0o755 || st.Uid != 0 {
				t.Errorf("q: mode %o owner %d, want the 0755 default", st.Mode&0o7777, st.Uid)
			}
			for _, p := range walkNames(t, root) {
				if strings.Contains(p, whiteoutPrefix) {
					t.Errorf("whiteout file %s created", p)
				}
			}
		})
	}
}

func compress(t testing.TB, c Compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case Gzip:
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(b)
		zw.Close()
	default:
		return b
	}
	return buf.Bytes()
}

func TestApplyDigest(t *testing.T) {
	requireRoot(t)
	tarball := layer(t, D("a/"), F("a/f", randomBytes(200<<10, 2)), F("g", "g"), L("l", "g"))
	trailing := append(append([]byte{}, tarball...), make([]byte, 10240)...)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		for name, tb := range map[string][]byte{"tar": tarball, "trailing-zeros": trailing} {
			t.Run(c.String()+"/"+name, func(t *testing.T) {
				root := t.TempDir()
				d, size, err := Apply(context.Background(), root, bytes.NewReader(compress(t, c, tb)))
				if err != nil {
					t.Fatal(err)
				}
				if want := digest.FromBytes(tb); d != want || size != int64(len(tb)) {
					t.Errorf("got %s %d, want %s %d", d, size, want, len(tb))
				}
				if got := readFile(t, filepath.Join(root, "g")); got != "g" {
					t.Errorf("g = %q", got)
				}
			})
		}
	}
}

func TestDecompress(t *testing.T) {
	plain := layer(t, F("x", "y"))
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"plain", plain, plain, nil},
		{"gzip", compress(t, Gzip, plain), plain, nil},
		{"zstd", compress(t, Zstd, plain), plain, nil},
		{"zstd-skippable", append([]byte{0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 'h', 'i'}, compress(t, Zstd, plain)...), plain, nil},
		{"empty", nil, nil, nil},
		{"short", []byte{0x1f}, []byte{0x1f}, nil},
		{"BZh-named-tar", append([]byte("BZh9file"), plain[8:]...), append([]byte("BZh9file"), plain[8:]...), nil},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 0}, nil, errdefs.ErrNotImplemented},
		{"bzip2", []byte{'B', 'Z', 'h', '9', 0x31, 0x41, 0x59, 0x26, 0x53, 0x59}, nil, errdefs.ErrNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := Decompress(bytes.NewReader(tc.in))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var got bytes.Buffer
			if _, err := got.ReadFrom(rc); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), tc.want) {
				t.Errorf("decompressed %d bytes, want %d", got.Len(), len(tc.want))
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	requireRoot(t)
	full := layer(t, F("f", strings.Repeat("x", 4096)))
	truncated := full[:512+100]
	badType := layer(t, newEntry('Z', "weird", 0o644))
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"truncated":        {in: truncated},
		"unknown-type":     {in: badType, want: ErrInvalidLayer},
		"garbage-gzip":     {in: []byte{0x1f, 0x8b, 0, 1, 2, 3}},
		"hardlink-missing": {in: layer(t, H("a", "nothere")), want: errdefs.ErrInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			err := applyBytes(t, t.TempDir(), tc.in)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := Apply(context.Background(), filepath.Join(t.TempDir(), "missing"), bytes.NewReader(full)); err == nil {
		t.Error("apply onto a missing root succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Apply(ctx, t.TempDir(), bytes.NewReader(full)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled apply: %v", err)
	}
}

func TestSyncFS(t *testing.T) {
	if err := SyncFS(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := SyncFS(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("syncfs of a missing dir succeeded")
	}
}

// TestApplyDigestMatchesSha256 checks the digest against a hash computed
// independently of go-digest.
func TestApplyDigestMatchesSha256(t *testing.T) {
	requireRoot(t)
	tb := layer(t, F("x", "y"))
	d, _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(tb))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tb)
	if d.Encoded() != hexString(sum[:]) {
		t.Fatalf("digest %s, want sha256:%x", d, sum)
	}
}

func hexString(b []byte) string {
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hexdigits[c>>4], hexdigits[c&15])
	}
	return string(out)
}
