package integration

import (
	"bufio"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestCtrTasks drives the task commands of Debian's ctr against berthd,
// through each shim.
func TestCtrTasks(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			d := shimDaemon(t, shim)
			ctr := func(args ...string) string {
				t.Helper()
				out, err := d.Ctr(args...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			ctr("images", "import", busyboxArchive(t))
			t.Cleanup(func() {
				d.Ctr("tasks", "kill", "-s", "SIGKILL", "t1")
				time.Sleep(200 * time.Millisecond)
				d.Ctr("tasks", "delete", "t1")
				d.Ctr("containers", "rm", "t1")
			})
			ctr("run", "-d", busyboxRef, "t1", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
			if !regexp.MustCompile(`(?m)^t1\s+\d+\s+RUNNING`).MatchString(ctr("tasks", "ls")) {
				t.Fatalf("t1 not RUNNING:\n%s", ctr("tasks", "ls"))
			}
			mustContain(t, ctr("tasks", "exec", "--exec-id", "e1", "t1", "ls", "/"), "bin", "proc", "etc")
			ps := ctr("tasks", "ps", "t1")
			if !regexp.MustCompile(`(?m)^\d+\s`).MatchString(ps) {
				t.Errorf("tasks ps:\n%s", ps)
			}
			ctr("tasks", "pause", "t1")
			mustContain(t, ctr("tasks", "ls"), "PAUSED")
			ctr("tasks", "resume", "t1")
			mustContain(t, ctr("tasks", "ls"), "RUNNING")
			mustContain(t, ctr("tasks", "metrics", "t1"), "memory")

			// attach to the detached task sees its output
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "ctr", "-a", d.Address, "tasks", "attach", "t1")
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			got := false
			for sc.Scan() {
				if strings.Contains(sc.Text(), "tick") {
					got = true
					break
				}
			}
			cancel()
			_ = cmd.Wait()
			if !got {
				t.Error("tasks attach saw no output of the detached task")
			}

			ctr("tasks", "kill", "-s", "SIGKILL", "t1")
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(ctr("tasks", "ls"), "STOPPED") {
				if time.Now().After(deadline) {
					t.Fatal("t1 did not stop after SIGKILL")
				}
				time.Sleep(50 * time.Millisecond)
			}
			out, err := d.Ctr("tasks", "delete", "t1")
			if err != nil || !strings.Contains(out, "137") {
				t.Errorf("tasks delete: %v\n%s (want exit status 137)", err, out)
			}
			ctr("containers", "rm", "t1")

			// an interactive terminal under a pseudo-terminal
			if _, err := exec.LookPath("script"); err == nil {
				c := exec.Command("script", "-qfec", "ctr -a "+d.Address+" run -t --rm "+busyboxRef+" tty1 sh -c 'tty; exit 4'", "/dev/null")
				out, err := c.CombinedOutput()
				if !strings.Contains(string(out), "/dev/pts/") {
					t.Errorf("run -t: %v\n%s", err, out)
				}
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
					t.Errorf("run -t exit: %v, want 4", err)
				}
			}
		})
	}
}
