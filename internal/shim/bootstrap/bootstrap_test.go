package bootstrap

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "l-test")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("socket gone after Close: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode %v, want 0700", di.Mode().Perm())
	}
	long := "/tmp/" + strings.Repeat("x", MaxSocketPath)
	if _, err := Listen(long); err == nil {
		t.Errorf("Listen of a %d-byte path succeeded", len(long))
	}
}

func TestAdjustOOMScore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to lower a score")
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	read := func(pid int) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	if err := AdjustOOMScore(cmd.Process.Pid, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	want := read(os.Getpid()) + 1
	if want > 1000 {
		want = 1000
	}
	if got := read(cmd.Process.Pid); got != want {
		t.Errorf("shim score %d, want %d", got, want)
	}
}

func TestServerEnv(t *testing.T) {
	got := ServerEnv([]string{"PATH=/bin", "GODEBUG=x=1", "GOMAXPROCS=4", "TTRPC_ADDRESS=/other", "A=b"}, "TTRPC_ADDRESS=/s")
	want := []string{"PATH=/bin", "A=b", "GODEBUG=" + GODEBUG + ",x=1", "GOMAXPROCS=1", "TTRPC_ADDRESS=/s"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ServerEnv = %q, want %q", got, want)
	}
	if got := ServerEnv(nil); strings.Join(got, " ") != "GODEBUG="+GODEBUG+" GOMAXPROCS=1" {
		t.Errorf("ServerEnv(nil) = %q", got)
	}
}
