//go:build linux

package archive

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sandbox is a temp dir holding the apply root several levels down and a
// sentinel tree beside it; everything but root is snapshotted before an
// apply and compared after it.
type sandbox struct {
	base    string
	root    string // base/l1/l2/l3/root
	outside string // base/outside: the sentinel
}

const rootRel = "l1/l2/l3/root"

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	return newSandboxIn(t, t.TempDir())
}

// newSandboxIn builds the sandbox in the empty directory base.
func newSandboxIn(t testing.TB, base string) *sandbox {
	t.Helper()
	s := &sandbox{base: base, root: filepath.Join(base, rootRel), outside: filepath.Join(base, "outside")}
	for _, d := range []string{s.root, filepath.Join(s.outside, "dir"), filepath.Join(s.root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"outside/secret":          "secret",
		"outside/dir/inner":       "inner",
		"outside/.wh.keep":        "keep",
		"l1/sibling":              "sibling",
		"l1/l2/l3/neighbor":       "neighbor",
		rootRel + "/etc/unbroken": "unbroken",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(base, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(s.outside, "secret"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("secret", filepath.Join(s.outside, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(s.outside, "secret"), "user.sentinel", []byte("1"), 0); err != nil && err != unix.ENOTSUP {
		t.Fatal(err)
	}
	old := time.Unix(1_000_000_000, 0)
	for _, p := range []string{"outside/secret", "outside/dir/inner", "outside/dir", "outside"} {
		if err := os.Chtimes(filepath.Join(base, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *sandbox) snapshot(t testing.TB) map[string]node {
	t.Helper()
	return snapshot(t, s.base, rootRel)
}

// checkUntouched fails t if anything outside root differs from before.
func (s *sandbox) checkUntouched(t testing.TB, before map[string]node) {
	t.Helper()
	if diffs := compareTrees(before, s.snapshot(t), allFields); len(diffs) > 0 {
		t.Fatalf("outside root changed:\n%s", strings.Join(diffs, "\n"))
	}
}

// applyMode is one way of running Apply in the tables.
type applyMode struct {
	name    string
	overlay bool
	opts    []ApplyOpt
}

func applyModes() []applyMode {
	manual := func(o *applyOptions) { o.manual = true }
	return []applyMode{
		{name: "native"},
		{name: "native-walk", opts: []ApplyOpt{manual}},
		{name: "overlay", overlay: true, opts: []ApplyOpt{WithOverlayWhiteouts()}},
		{name: "overlay-walk", overlay: true, opts: []ApplyOpt{WithOverlayWhiteouts(), manual}},
	}
}

const (
	either = iota
	mustSucceed
	mustFail
)

type breakoutCase struct {
	name    string
	entries func(s *sandbox) []entry
	want    int
	// check verifies how the layer was neutralized inside root.
	check func(t *testing.T, s *sandbox, m applyMode)
	// rootChanges says the layer may legitimately remove root/etc/unbroken.
	rootChanges bool
}

func TestBreakouts(t *testing.T) {
	requireRoot(t)
	hostEtc := "/etc/berth-archive-breakout-test"
	isFile := func(rel, content string) func(*testing.T, *sandbox, applyMode) {
		return func(t *testing.T, s *sandbox, _ applyMode) {
			t.Helper()
			if got := readFile(t, filepath.Join(s.root, rel)); got != content {
				t.Fatalf("%s = %q, want %q", rel, got, content)
			}
		}
	}
	cases := []breakoutCase{
		{name: "DotDotFile", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{F("../escape", "x")} },
			check:   isFile("escape", "x")},
		{name: "DotDotDeep", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{F("../../../../../../outside/secret", "pwn")} },
			check:   isFile("outside/secret", "pwn")},
		{name: "DotDotMiddle", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{F("a/../../x", "pwn"), F("a/b/../../../../../outside/secret", "pwn")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("x", "pwn")(t, s, m)
				isFile("outside/secret", "pwn")(t, s, m)
			}},
		{name: "AbsoluteOutside", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{F(s.outside+"/secret", "pwn")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile(strings.TrimPrefix(s.outside, "/")+"/secret", "pwn")(t, s, m)
			}},
		{name: "AbsoluteEtc", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{F(hostEtc, "pwn")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile(strings.TrimPrefix(hostEtc, "/"), "pwn")(t, s, m)
				if exists(hostEtc) {
					t.Fatalf("%s written on the host", hostEtc)
				}
			}},
		{name: "SymlinkAbsoluteThenWrite", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("evil", s.outside), F("evil/secret", "pwn")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile(strings.TrimPrefix(s.outside, "/")+"/secret", "pwn")(t, s, m)
			}},
		{name: "SymlinkRelativeThenWrite", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("evil", "../../../../outside"), F("evil/secret", "pwn")} },
			check:   isFile("outside/secret", "pwn")},
		{name: "SymlinkToSlashThenWrite", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("evil", "/"), F("evil/x", "pwn"), F("evil/../../y", "pwn")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("x", "pwn")(t, s, m)
				isFile("y", "pwn")(t, s, m)
			}},
		{name: "SymlinkAbsoluteNested", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{D("d/"), L("d/evil", "/target"), F("d/evil/f", "1"), L("d/up", "/../../.."), F("d/up/g", "2")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("target/f", "1")(t, s, m)
				isFile("g", "2")(t, s, m)
			}},
		{name: "SymlinkSlashEnded", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("d", s.outside+"/"), F("d/secret", "pwn")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile(strings.TrimPrefix(s.outside, "/")+"/secret", "pwn")(t, s, m)
			}},
		{name: "SymlinkChain", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("a", "b"), L("b", "c/../../../../../outside"), F("a/secret", "pwn")}
			},
			check: isFile("outside/secret", "pwn")},
		{name: "SymlinkParentChain", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("up", ".."), F("up/up/up/up/outside/secret", "pwn")} },
			check:   isFile("outside/secret", "pwn")},
		{name: "SymlinkInsideSymlinkDir", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{D("d/"), L("d/up", "../.."), L("d/up2", "up/.."), F("d/up2/outside/secret", "pwn")}
			},
			check: isFile("outside/secret", "pwn")},
		{name: "SymlinkLoop", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{L("self", "self"), F("self/x", "pwn")} }},
		{name: "SymlinkEmptyTarget", want: either,
			entries: func(s *sandbox) []entry { return []entry{L("e", ""), F("e/x", "pwn")} }},
		{name: "SymlinkEmptyName", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("", s.outside), L("/", s.outside), L(".", s.outside)} }},
		{name: "SymlinkOverwrittenByFile", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("s", s.outside+"/secret"), F("s", "pwn")} },
			check:   isFile("s", "pwn")},
		{name: "DirectoryOverrideSymlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("d", s.outside+"/dir"), D("d/").mode(0o777).owner(1000, 1000), F("d/inner", "pwn")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				if st := lstat(t, filepath.Join(s.root, "d")); st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o777 != 0o777 {
					t.Fatalf("d mode %o, want a 0777 directory", st.Mode)
				}
				isFile("d/inner", "pwn")(t, s, m)
			}},
		{name: "DirectoryOverrideSymlinkRelative", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("d", "../../../../outside/dir"), D("d/").mode(0o777), F("d/inner", "pwn")}
			},
			check: isFile("d/inner", "pwn")},
		{name: "DirectoryOverrideSymlinkAndHardlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("foo", s.outside), H("bar", "foo"), D("bar/").mode(0o777), F("bar/secret", "pwn"), F("foo/secret", "pwn2")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("bar/secret", "pwn")(t, s, m)
				isFile(strings.TrimPrefix(s.outside, "/")+"/secret", "pwn2")(t, s, m)
			}},
		{name: "SymlinkOverridePath", want: mustSucceed, // CVE-2025-47290
			entries: func(s *sandbox) []entry {
				return []entry{
					D("foo/"), F("foo/a", "1"),
					L("foo", "/"), F("foo/payload2", "2"),
					D("foo/"), F("foo/payload3", "3"),
				}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("payload2", "2")(t, s, m)
				isFile("foo/payload3", "3")(t, s, m)
				if exists(filepath.Join(s.root, "foo/a")) || exists(filepath.Join(s.root, "foo/payload2")) {
					t.Fatal("foo/a or foo/payload2 survived foo's replacement")
				}
			}},
		{name: "SymlinkOverridePathOutside", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{
					D("foo/"), F("foo/a", "1"),
					L("foo", s.outside), F("foo/secret", "pwn"),
					L("foo", "../../../../outside"), F("foo/secret", "pwn2"), F("foo/dir/inner", "pwn3"),
					D("foo/"), F("foo/secret", "3"),
				}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile(strings.TrimPrefix(s.outside, "/")+"/secret", "pwn")(t, s, m)
				isFile("outside/secret", "pwn2")(t, s, m)
				isFile("outside/dir/inner", "pwn3")(t, s, m)
				isFile("foo/secret", "3")(t, s, m)
			}},
		{name: "SymlinkReplacesNestedDir", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{D("a/"), D("a/b/"), F("a/b/f", "1"), L("a/b", s.outside), F("a/b/secret", "pwn")}
			}},
		{name: "HardlinkRelativeOutside", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{H("link", "../outside/secret")} }},
		{name: "HardlinkUpAndOut", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{H("link", "../../../../outside/secret")} }},
		{name: "HardlinkAbsoluteOutside", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{H("link", s.outside+"/secret")} }},
		{name: "HardlinkRelativeLong", want: mustFail,
			entries: func(s *sandbox) []entry {
				return []entry{H("link", strings.Repeat("../", 30)+strings.TrimPrefix(s.outside, "/")+"/secret")}
			}},
		{name: "HardlinkThroughSymlinkDir", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{L("sd", s.outside), H("link", "sd/secret")} }},
		{name: "HardlinkThroughRelativeSymlinkDir", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{L("sd", "../../../../outside"), H("link", "sd/secret")} }},
		{name: "HardlinkSymlinkBeforeCreateTarget", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("s", s.outside+"/secret"), H("link", "s"), F(s.outside+"/secret", "pwn")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				if st := lstat(t, filepath.Join(s.root, "link")); st.Mode&unix.S_IFMT != unix.S_IFLNK {
					t.Fatalf("link is %o, want the symlink itself", st.Mode)
				}
			}},
		{name: "HardlinkSymlinkChmod", want: mustSucceed, // CVE-2021-32760
			entries: func(s *sandbox) []entry {
				return []entry{
					L(s.outside+"/x", s.outside+"/secret"),
					H("sketchylink", s.outside+"/x").mode(0o777),
					H("sketchylink2", "sketchylink").mode(0o6777).owner(1000, 1000).xattr("user.pwn", "1").xattr("trusted.pwn", "1"),
				}
			}},
		{name: "HardlinkSymlinkChmodRelative", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{
					L("s", "../../../../outside/secret"),
					H("h", "s").mode(0o777),
					H("h", "s").mode(0o777).owner(1000, 1000),
					H("h2", "h").mode(0o666).mtime(time.Unix(5, 0)),
				}
			}},
		{name: "HardlinkToDirectory", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{H("link", "etc")} }},
		{name: "HardlinkToWhiteout", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{F("a", "1"), H("b", ".wh.a")} }},
		{name: "HardlinkToRoot", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{H("link", "..")} }},
		{name: "WhiteoutRootParent", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{W("../.wh.secret"), W("../../.wh.l3")} }},
		{name: "WhiteoutOutsidePath", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{W("../../../../outside/.wh.secret"), W(s.outside + "/.wh.dir")}
			}},
		{name: "WhiteoutThroughSymlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("evil", s.outside), W("evil/.wh.secret"), W("evil/.wh.dir"), W("evil/.wh..wh..opq")}
			}},
		{name: "WhiteoutThroughRelativeSymlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("evil", "../../../../outside"), W("evil/.wh.secret"), W("evil/.wh..wh..opq"), L("up", "../.."), W("up/.wh.outside")}
			}},
		{name: "WhiteoutSymlinkItself", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("evil", s.outside+"/secret"), L("evil2", s.outside), W(".wh.evil"), W(".wh.evil2")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				for _, name := range []string{"evil", "evil2"} {
					p := filepath.Join(s.root, name)
					if !m.overlay && exists(p) {
						t.Fatalf("%s survived its whiteout", name)
					}
					if m.overlay {
						if st := lstat(t, p); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
							t.Fatalf("%s is %o, want a 0/0 whiteout device", name, st.Mode)
						}
					}
				}
			}},
		{name: "WhiteoutDeadSymlinkParent", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{L("dead", s.outside+"/nonexistent"), W("dead/.wh.x")} }},
		{name: "WhiteoutParentName", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{W("etc/.wh..")} }},
		{name: "WhiteoutCurrentDirectory", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{W(".wh..")} }},
		{name: "WhiteoutEmptyName", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{W("etc/.wh.")} }},
		{name: "WhiteoutDirectoryName", want: mustSucceed,
			entries: func(s *sandbox) []entry { return []entry{D(".wh.etc/"), D("x/.wh.y/")} },
			check: func(t *testing.T, s *sandbox, m applyMode) {
				if !m.overlay && exists(filepath.Join(s.root, "etc")) {
					t.Fatal("etc not whited out")
				}
			},
			rootChanges: true},
		{name: "OpaqueRootParent", want: mustSucceed, rootChanges: true,
			entries: func(s *sandbox) []entry { return []entry{W("../.wh..wh..opq"), W("../../../.wh..wh..opq")} }},
		{name: "DotEntries", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{
					D(".").mode(0o777).owner(1000, 1000).xattr("user.pwn", "1"), D("./"), D("/"), D(".."), D("../.."),
					F("..", "pwn"), F(".", "pwn"), L("..", s.outside), H(".", "etc/unbroken"), Char("..", 1, 3),
				}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				if st := lstat(t, s.root); st.Mode&0o7777 != 0o755 || st.Uid != 0 {
					t.Fatalf("root changed to mode %o uid %d", st.Mode&0o7777, st.Uid)
				}
			}},
		{name: "LongComponent", want: mustFail,
			entries: func(s *sandbox) []entry { return []entry{F(strings.Repeat("a", 300), "x")} }},
		{name: "LongPath", want: either,
			entries: func(s *sandbox) []entry {
				return []entry{F(strings.Repeat("d/", 2100)+"f", "x"), F(strings.Repeat("../", 3000)+"outside/secret", "x")}
			}},
		{name: "LongSymlinkTarget", want: either,
			entries: func(s *sandbox) []entry {
				return []entry{L("l", strings.Repeat("../", 1300)+"outside"), F("l/secret", "pwn")}
			}},
		{name: "DeviceAtSymlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{
					L("evil", s.outside+"/secret"), Char("evil", 1, 3),
					L("fifo", s.outside+"/secret"), Fifo("fifo"),
					L("evil2", s.outside), Char("evil2/null", 1, 3), Fifo("evil2/fifo"), Block("evil2/blk", 7, 0),
					L("evil3", "../../../../outside"), Char("evil3/secret", 1, 3),
				}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				if st := lstat(t, filepath.Join(s.root, "evil")); st.Mode&unix.S_IFMT != unix.S_IFCHR {
					t.Fatalf("evil is %o, want a device", st.Mode)
				}
				if st := lstat(t, filepath.Join(s.root, "outside/secret")); st.Mode&unix.S_IFMT != unix.S_IFCHR {
					t.Fatalf("outside/secret is %o, want a device", st.Mode)
				}
			}},
		{name: "MetadataThroughSymlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{
					L("s", s.outside+"/secret").owner(1234, 1234).mtime(time.Unix(7, 0)).xattr("trusted.pwn", "1").xattr("user.pwn", "1"),
					L("d", s.outside+"/dir").xattr("user.pwn", "1").owner(1234, 1234),
					L("r", "../../../../outside/secret").mode(0o7777).owner(1234, 1234),
				}
			}},
		{name: "SymlinkToOutsideFileThenOverwriteViaHardlink", want: mustSucceed,
			entries: func(s *sandbox) []entry {
				return []entry{L("s", s.outside+"/secret"), H("h", "s"), F("h", "pwn"), F("s", "pwn2")}
			},
			check: func(t *testing.T, s *sandbox, m applyMode) {
				isFile("h", "pwn")(t, s, m)
				isFile("s", "pwn2")(t, s, m)
			}},
	}

	for _, m := range applyModes() {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				s := newSandbox(t)
				before := s.snapshot(t)
				err := applyBytes(t, s.root, layer(t, tc.entries(s)...), m.opts...)
				switch {
				case tc.want == mustSucceed && err != nil:
					t.Errorf("apply failed: %v", err)
				case tc.want == mustFail && err == nil:
					t.Errorf("apply succeeded, want an error")
				case err != nil:
					t.Logf("apply refused: %v", err)
				}
				s.checkUntouched(t, before)
				if !tc.rootChanges {
					if got := readFile(t, filepath.Join(s.root, "etc/unbroken")); got != "unbroken" {
						t.Errorf("etc/unbroken = %q", got)
					}
				}
				if exists(hostEtc) {
					os.Remove(hostEtc)
					t.Fatalf("%s written on the host", hostEtc)
				}
				if tc.check != nil && err == nil && !t.Failed() {
					tc.check(t, s, m)
				}
			})
		}
	}
}
