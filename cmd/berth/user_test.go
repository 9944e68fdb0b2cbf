package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nwww:x:33:33::/var/www:/bin/false\nbob:x:1000:1000::/home/bob:/bin/sh\n" +
		"evil:x:1001:4294967296::/:/bin/sh\nbad:x:1002:staff::/:/bin/sh\nshort:x:1003:1003\n"
	testGroup = "root:x:0:\nwww:x:33:bob\nstaff:x:50:bob,www\nbob:x:1000:\nhuge:x:4294967296:bob\nbare:x:60\n"
)

// userRoot makes a root filesystem whose /etc holds passwd and group as
// given (a nil body leaves the file out).
func userRoot(t *testing.T, passwd, group *string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]*string{"passwd": passwd, "group": group} {
		if body != nil {
			if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(*body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func ptr(s string) *string { return &s }

func TestLookupUser(t *testing.T) {
	root := userRoot(t, ptr(testPasswd), ptr(testGroup))
	for _, tc := range []struct {
		user string
		want specs.User
		err  string
	}{
		{user: "root", want: specs.User{UID: 0, GID: 0}},
		{user: "bob", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{33, 50}}},
		{user: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{33, 50}}},
		// an explicit group brings no supplementary groups (as Docker and runc)
		{user: "bob:staff", want: specs.User{UID: 1000, GID: 50}},
		{user: "www:7", want: specs.User{UID: 33, GID: 7}},
		{user: "www", want: specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{50}}},
		{user: "0:bare", want: specs.User{UID: 0, GID: 60}},
		// lines without the trailing fields count
		{user: "short", want: specs.User{UID: 1003, GID: 1003}},
		// an entry whose group is out of range or not a number is skipped,
		// never read as group 0
		{user: "evil", err: `no user "evil"`},
		{user: "1001", want: specs.User{UID: 1001, GID: 0}},
		{user: "bad", err: `no user "bad"`},
		{user: "bob:huge", err: `no group "huge"`},
		{user: "4242", want: specs.User{UID: 4242, GID: 0}},
		{user: "4242:www", want: specs.User{UID: 4242, GID: 33}},
		{user: "2147483647:2147483647", want: specs.User{UID: 2147483647, GID: 2147483647}},
		{user: "nobody", err: `no user "nobody"`},
		{user: "bob:wheel", err: `no group "wheel"`},
		// never wrapped to 0 (CVE-2024-40635)
		{user: "2147483648", err: "out of range"},
		{user: "4294967296", err: "out of range"},
		{user: "0:4294967296", err: "out of range"},
		{user: "99999999999999999999999", err: "out of range"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			got, err := lookupUser(root, tc.user)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("lookupUser(%q) = %+v, %v; want error %q", tc.user, got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("lookupUser(%q) = %+v, %v; want %+v", tc.user, got, err, tc.want)
			}
		})
	}
}

// The image's files are read inside its root, and hostile ones are refused
// without hanging (CVE-2026-47262 class).
func TestLookupUserHostileFiles(t *testing.T) {
	t.Run("missing files", func(t *testing.T) {
		root := userRoot(t, nil, nil)
		if u, err := lookupUser(root, "1000:1000"); err != nil || u.UID != 1000 || u.GID != 1000 {
			t.Fatalf("%+v %v", u, err)
		}
		if _, err := lookupUser(root, "bob"); err == nil || !strings.Contains(err.Error(), `no user "bob"`) {
			t.Fatalf("want no user, got %v", err)
		}
	})
	t.Run("symlink out of the root", func(t *testing.T) {
		// an absolute link resolves inside the root, to its own file
		host := filepath.Join(t.TempDir(), "passwd")
		if err := os.WriteFile(host, []byte("bob:x:7:7::/:/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		root := userRoot(t, nil, ptr(testGroup))
		if err := os.Symlink(host, filepath.Join(root, "etc", "passwd")); err != nil {
			t.Fatal(err)
		}
		if u, err := lookupUser(root, "bob"); err == nil {
			t.Fatalf("the host's file was read through the link: %+v", u)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(host)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, host), []byte("bob:x:8:8::/:/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if u, err := lookupUser(root, "bob"); err != nil || u.UID != 8 {
			t.Fatalf("the link did not resolve inside the root: %+v %v", u, err)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		root := userRoot(t, nil, ptr(testGroup))
		if err := syscall.Mkfifo(filepath.Join(root, "etc", "passwd"), 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := lookupUser(root, "bob"); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("want not a regular file, got %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the lookup hangs on a FIFO")
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := strings.Repeat("#"+strings.Repeat("x", 1023)+"\n", maxUserFile/1024+1)
		root := userRoot(t, ptr(big), ptr(testGroup))
		if _, err := lookupUser(root, "bob"); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("want too large, got %v", err)
		}
	})
}

// A device node (here /dev/zero's) as /etc/passwd is refused without being
// opened for reading.
func TestLookupUserDevice(t *testing.T) {
	root := userRoot(t, nil, ptr(testGroup))
	if err := syscall.Mknod(filepath.Join(root, "etc", "passwd"), syscall.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	if _, err := lookupUser(root, "bob"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("want not a regular file, got %v", err)
	}
}
