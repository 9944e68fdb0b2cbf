package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockRootGoesWithTheProcess: the root's lock is released when the
// berthd holding it dies, even while a process it started still has the
// lock file open (a child caught between fork and exec when berthd is
// killed; here a child handed the file on purpose), so that a berthd
// restarted at once is not refused. A second berthd is refused while the
// first lives.
func TestLockRootGoesWithTheProcess(t *testing.T) {
	if root := os.Getenv("BERTH_TEST_LOCK_ROOT"); root != "" {
		lockHelper(root)
		return
	}
	root := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^TestLockRootGoesWithTheProcess$")
	helper.Env = append(os.Environ(), "BERTH_TEST_LOCK_ROOT="+root)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	child, cerr := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "child "))
	if err != nil || cerr != nil {
		t.Fatalf("helper said %q, %v", line, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })

	if _, err := lockRoot(root); err == nil {
		t.Fatal("a second berthd got the lock of a live one")
	}
	_ = helper.Process.Kill()
	_ = helper.Wait()
	if err := syscall.Kill(child, 0); err != nil {
		t.Fatalf("the child holding the lock file is gone already: %v", err)
	}
	unlock, err := lockRoot(root)
	if err != nil {
		t.Fatalf("lock after its holder died, with the holder's child still running: %v", err)
	}
	unlock()
}

// lockHelper takes the lock as berthd does, starts a child that inherits
// the lock's open file, prints the child's pid, and waits to be killed.
func lockHelper(root string) {
	if _, err := lockRoot(root); err != nil {
		panic(err)
	}
	fd := -1
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasSuffix(target, "/berthd.lock") {
			fd, _ = strconv.Atoi(e.Name())
		}
	}
	if fd < 0 {
		panic("no open lock file")
	}
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "berthd.lock")}
	if err := child.Start(); err != nil {
		panic(err)
	}
	fmt.Printf("child %d\n", child.Process.Pid)
	time.Sleep(time.Minute)
}

func TestInside(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/root/sub", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir+"/root/sub", dir+"/link"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir, root string
		want      bool
	}{
		{"/a/b", "/a/b", true},
		{"/a/b/c", "/a/b", true},
		{"/a/b/..x", "/a/b", true},
		{"/a/bc", "/a/b", false},
		{"/a", "/a/b", false},
		{"/run/berth", "/var/lib/berth", false},
		{dir + "/link", dir + "/root", true},
		{dir + "/link/../x", dir + "/root", false},
	} {
		if got := inside(tc.dir, tc.root); got != tc.want {
			t.Errorf("inside(%q, %q) = %v, want %v", tc.dir, tc.root, got, tc.want)
		}
	}
}
