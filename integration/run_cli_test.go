package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
)

// runCLIResult is one berth invocation: stdout and stderr apart, and the exit status.
type runCLIResult struct {
	stdout, stderr string
	code           int
}

func (r runCLIResult) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCLI runs berth against d (stdin from /dev/null) and returns what it printed and its
// exit status; a berth that cannot be run at all fails the test.
func runCLI(t *testing.T, d *testutil.Daemon, args ...string) runCLIResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Binary(t, "berth"), append([]string{"-a", d.Address}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := runCLIResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("berth %q: %v", args, err)
	}
	return r
}

// runCLIOK runs berth and fails the test unless it exits 0; it returns stdout.
func runCLIOK(t *testing.T, d *testutil.Daemon, args ...string) string {
	t.Helper()
	r := runCLI(t, d, args...)
	if r.code != 0 {
		t.Fatalf("berth %q: %v", args, r)
	}
	return r.stdout
}

// runCLIStatus reads the STATUS column of a task in `berth tasks ls`.
func runCLIStatus(t *testing.T, d *testutil.Daemon, id string) string {
	t.Helper()
	header, rows := cliTable(t, runCLIOK(t, d, "tasks", "ls"))
	if strings.Join(header, " ") != "TASK PID STATUS" {
		t.Fatalf("tasks ls header %q", header)
	}
	for _, r := range rows {
		if len(r) == 3 && r[0] == id {
			return r[2]
		}
	}
	return ""
}

// runCLIDaemon starts berthd with shim serving io.containerd.runc.v2, imports busybox with
// ctr, and leaves no task running behind the test.
func runCLIDaemon(t *testing.T, shim string) *testutil.Daemon {
	t.Helper()
	testutil.RequireBinary(t, "ctr")
	d := shimDaemon(t, shim)
	t.Cleanup(func() { runCLIKillAll(t, d) })
	if out, err := d.Ctr("images", "import", busyboxArchive(t)); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	return d
}

// runCLIKillAll kills and deletes every task of the default namespace.
func runCLIKillAll(t *testing.T, d *testutil.Daemon) {
	if d.Exited() {
		return
	}
	ctx, cancel := context.WithTimeout(testutil.WithNamespace(context.Background(), "default"), 30*time.Second)
	defer cancel()
	ts := tasks.NewTasksClient(d.Conn(t))
	list, err := ts.List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return
	}
	for _, p := range list.Tasks {
		_, _ = ts.Kill(ctx, &tasks.KillRequest{ContainerID: p.ID, Signal: uint32(syscall.SIGKILL), All: true})
		_, _ = ts.Resume(ctx, &tasks.ResumeTaskRequest{ContainerID: p.ID})
		_, _ = ts.Wait(ctx, &tasks.WaitRequest{ContainerID: p.ID})
		_, _ = ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: p.ID})
	}
}

// TestRunCLI: berth run, berth tasks, through each shim.
func TestRunCLI(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			d := runCLIDaemon(t, shim)

			// run --rm: exactly the output, the exit status, nothing left behind
			r := runCLI(t, d, "run", "--rm", busyboxRef, "r1", "echo", "hi")
			if r.code != 0 || r.stdout != "hi\n" || r.stderr != "" {
				t.Errorf("run echo hi: %v", r)
			}
			r = runCLI(t, d, "run", "--rm", busyboxRef, "r1", "sh", "-c", "echo out; echo err >&2; exit 5")
			if r.code != 5 || r.stdout != "out\n" || r.stderr != "err\n" {
				t.Errorf("run exit 5: %v", r)
			}
			r = runCLI(t, d, "run", "--env", "A=b", "--rm", busyboxRef, "r2", "sh", "-c", "echo $A")
			if r.code != 0 || r.stdout != "b\n" {
				t.Errorf("run --env: %v", r)
			}
			// the image's environment is kept: PATH from the image config
			r = runCLI(t, d, "run", "--rm", "--env", "B=c,d", busyboxRef, "r2", "sh", "-c", `echo "$PATH $B"`)
			if r.code != 0 || r.stdout != "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin c,d\n" {
				t.Errorf("run env: %v", r)
			}
			// the image's Cmd (/bin/sh) runs when no command is given; stdin is /dev/null
			if r = runCLI(t, d, "run", "--rm", busyboxRef, "r2"); r.code != 0 {
				t.Errorf("run with the image's Cmd: %v", r)
			}
			for _, args := range [][]string{{"containers", "ls", "-q"}, {"tasks", "ls", "-q"}} {
				if out := runCLIOK(t, d, args...); out != "" {
					t.Errorf("berth %v after run --rm: %q", args, out)
				}
			}
			if out := runCLIOK(t, d, "snapshots", "ls", "-q"); strings.Contains(out, "r1") || strings.Contains(out, "r2") {
				t.Errorf("container snapshots left after run --rm:\n%s", out)
			}
			if entries, _ := os.ReadDir("/run/berth/fifo"); runCLIFIFODirsOf(entries, "r1", "r2") {
				t.Errorf("FIFO directories left in /run/berth/fifo")
			}

			// user, bind mount (read-only), host network
			if r = runCLI(t, d, "run", "--rm", "-u", "root", busyboxRef, "u1", "id"); r.code != 0 || !strings.HasPrefix(r.stdout, "uid=0(root) gid=0(root)") {
				t.Errorf("run -u root: %v", r)
			}
			if r = runCLI(t, d, "run", "--rm", "--user", "1000:1001", busyboxRef, "u1", "id"); r.code != 0 || r.stdout != "uid=1000 gid=1001\n" {
				t.Errorf("run --user 1000:1001: %v", r)
			}
			if r = runCLI(t, d, "run", "--rm", "-u", "nobody", busyboxRef, "u1", "id"); r.code != 1 || !strings.Contains(r.stderr, `no user "nobody"`) {
				t.Errorf("run -u of a user the image lacks: %v", r)
			}
			// 2^32 is refused, never wrapped to root (CVE-2024-40635)
			if r = runCLI(t, d, "run", "--rm", "-u", "4294967296", busyboxRef, "u1", "id"); r.code != 1 || !strings.Contains(r.stderr, "out of range") {
				t.Errorf("run -u 4294967296: %v", r)
			}
			share := t.TempDir()
			if err := os.WriteFile(filepath.Join(share, "f"), []byte("shared\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r = runCLI(t, d, "run", "--rm", "--mount", "type=bind,src="+share+",dst=/mnt,options=rbind:ro", busyboxRef, "m1",
				"sh", "-c", "cat /mnt/f; touch /mnt/g")
			if r.code != 1 || r.stdout != "shared\n" || !strings.Contains(r.stderr, "Read-only") {
				t.Errorf("run --mount ro: %v", r)
			}
			if r = runCLI(t, d, "run", "--rm", "--net-host", busyboxRef, "n1", "ls", "/sys/class/net"); r.code != 0 || len(strings.Fields(r.stdout)) < 2 {
				t.Errorf("run --net-host sees only %q: %v", r.stdout, r)
			}
			if r = runCLI(t, d, "run", "--rm", busyboxRef, "n1", "ls", "/sys/class/net"); r.code != 0 || strings.TrimSpace(r.stdout) != "lo" {
				t.Errorf("run without --net-host: %v", r)
			}

			// signals to berth go to the task
			runCLISignal(t, d, syscall.SIGTERM, 43)
			runCLISignal(t, d, syscall.SIGINT, 42)

			// a container that exists is refused with advice
			runCLIOK(t, d, "run", "--null-io", busyboxRef, "r0", "true")
			r = runCLI(t, d, "run", "--rm", busyboxRef, "r0", "true")
			if r.code != 1 || !strings.Contains(r.stderr, "berth containers rm r0") {
				t.Errorf("run over an existing container: %v", r)
			}
			runCLIOK(t, d, "containers", "rm", "r0")

			// run -d, then the tasks commands
			r = runCLI(t, d, "run", "-d", busyboxRef, "r3", "sleep", "1000")
			if r.code != 0 || r.stdout != "" {
				t.Fatalf("run -d: %v", r)
			}
			if st := runCLIStatus(t, d, "r3"); st != "RUNNING" {
				t.Errorf("r3 is %q, want RUNNING", st)
			}
			out, err := d.Ctr("tasks", "ls")
			if err != nil || !regexp.MustCompile(`(?m)^r3\s+\d+\s+RUNNING`).MatchString(out) {
				t.Errorf("ctr tasks ls: %v\n%s", err, out)
			}
			r = runCLI(t, d, "tasks", "exec", "--exec-id", "e1", "r3", "ls", "/")
			if r.code != 0 || !regexp.MustCompile(`(?m)^bin$`).MatchString(r.stdout) {
				t.Errorf("tasks exec ls /: %v", r)
			}
			r = runCLI(t, d, "tasks", "exec", "r3", "sh", "-c", "exit 7")
			if r.code != 7 {
				t.Errorf("tasks exec exit 7: %v", r)
			}
			header, rows := cliTable(t, runCLIOK(t, d, "tasks", "ps", "r3"))
			if strings.Join(header, " ") != "PID INFO" || len(rows) != 1 || !regexp.MustCompile(`^\d+$`).MatchString(rows[0][0]) {
				t.Errorf("tasks ps r3: %q %q", header, rows)
			}
			_, lsRows := cliTable(t, runCLIOK(t, d, "tasks", "ls"))
			if len(rows) == 1 && len(lsRows) == 1 && rows[0][0] != lsRows[0][1] {
				t.Errorf("tasks ps pid %s, tasks ls pid %s", rows[0][0], lsRows[0][1])
			}
			runCLIOK(t, d, "tasks", "pause", "r3")
			if st := runCLIStatus(t, d, "r3"); st != "PAUSED" {
				t.Errorf("r3 is %q after pause", st)
			}
			runCLIOK(t, d, "tasks", "resume", "r3")
			if st := runCLIStatus(t, d, "r3"); st != "RUNNING" {
				t.Errorf("r3 is %q after resume", st)
			}
			out = runCLIOK(t, d, "tasks", "metrics", "r3")
			mustContain(t, out, "METRIC", "memory.usage", "memory.limit", "cpu.usage", "pids.current")
			if out = runCLIOK(t, d, "tasks", "metrics", "--json", "r3"); !strings.Contains(out, `"io.containerd.cgroups.v`) {
				t.Errorf("tasks metrics --json:\n%s", out)
			}
			// a running task is not deleted, and says what to do
			r = runCLI(t, d, "tasks", "rm", "r3")
			if r.code != 1 || !strings.Contains(r.stderr, "berth tasks kill r3") || !strings.Contains(r.stderr, "berth tasks rm -f r3") {
				t.Errorf("tasks rm of a running task: %v", r)
			}
			if r = runCLI(t, d, "containers", "rm", "r3"); r.code != 1 || !strings.Contains(r.stderr, "running task") {
				t.Errorf("containers rm with a running task: %v", r)
			}
			runCLIOK(t, d, "tasks", "kill", "-s", "SIGKILL", "r3")
			runCLIWaitStatus(t, d, "r3", "STOPPED")
			out = runCLIOK(t, d, "tasks", "rm", "r3")
			if !strings.Contains(out, "137") {
				t.Errorf("tasks rm r3 does not report exit 137: %q", out)
			}
			runCLIOK(t, d, "containers", "rm", "r3")
			if out := runCLIOK(t, d, "snapshots", "ls", "-q"); strings.Contains(out, "r3") {
				t.Errorf("snapshot r3 left after containers rm:\n%s", out)
			}

			// kill by number, rm -f
			runCLIOK(t, d, "run", "-d", busyboxRef, "r4", "sleep", "1000")
			runCLIOK(t, d, "tasks", "pause", "r4")
			if out = runCLIOK(t, d, "tasks", "rm", "-f", "r4"); !strings.Contains(out, "137") {
				t.Errorf("tasks rm -f of a paused task: %q", out)
			}
			runCLIOK(t, d, "tasks", "start", "-d", "r4")
			runCLIOK(t, d, "tasks", "kill", "-s", "9", "r4")
			runCLIWaitStatus(t, d, "r4", "STOPPED")
			runCLIOK(t, d, "containers", "rm", "r4") // a stopped task goes with its container

			// attach to a detached container
			runCLIOK(t, d, "run", "-d", busyboxRef, "a1", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
			runCLIAttach(t, d, "a1")
			runCLIOK(t, d, "containers", "rm", "a1")

			// tasks start in the foreground: exit status and output
			runCLIOK(t, d, "run", "--null-io", busyboxRef, "s1", "true") // the container stays
			// (s1's task was deleted by run; start makes a new one running the same command)
			r = runCLI(t, d, "tasks", "start", "s1")
			if r.code != 0 {
				t.Errorf("tasks start s1: %v", r)
			}
			runCLIOK(t, d, "containers", "rm", "s1")

			// a terminal: the process sees a pty, the exit status comes through
			runCLITerminal(t, d)

			// security of what runs: compare with Debian's runc shim, which gives the same
			runCLISecurity(t, d)
		})
	}
}

// runCLISignal sends sig to berth run and wants the task's trap to end it with code.
func runCLISignal(t *testing.T, d *testutil.Daemon, sig syscall.Signal, code int) {
	t.Helper()
	script := fmt.Sprintf(`trap "echo got-%[1]d; exit %[2]d" %[1]d; echo ready; while true; do sleep 0.1; done`, int(sig), code)
	cmd := exec.Command(testutil.Binary(t, "berth"), "-a", d.Address, "run", "--rm", busyboxRef, "sig", "sh", "-c", script)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
			runCLIKillAll(t, d)
			_, _ = d.Berth("containers", "rm", "sig")
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ready\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the task did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("berth run did not end after %v:\n%s", sig, out.String())
	}
	var exit *exec.ExitError
	if !errors.As(waitErr, &exit) || exit.ExitCode() != code || !strings.Contains(out.String(), fmt.Sprintf("got-%d", int(sig))) {
		t.Errorf("berth run after %v: %v, want exit status %d\n%s", sig, waitErr, code, out.String())
	}
}

// runCLIFIFODirsOf reports whether a FIFO directory holds FIFOs of one of ids.
func runCLIFIFODirsOf(entries []os.DirEntry, ids ...string) bool {
	for _, e := range entries {
		inner, _ := os.ReadDir(filepath.Join("/run/berth/fifo", e.Name()))
		for _, f := range inner {
			for _, id := range ids {
				if strings.HasPrefix(f.Name(), id+"-") {
					return true
				}
			}
		}
	}
	return false
}

// runCLIWaitStatus waits until berth tasks ls shows the task in status.
func runCLIWaitStatus(t *testing.T, d *testutil.Daemon, id, status string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := runCLIStatus(t, d, id)
		if st == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %q, want %s", id, st, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCLIAttach attaches to a task printing ticks, sees them, kills the task and wants attach
// to end with 137 and to have deleted the task (as ctr's attach does).
func runCLIAttach(t *testing.T, d *testutil.Daemon, id string) {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t, "berth"), "-a", d.Address, "tasks", "attach", id)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "tick\n") {
		if time.Now().After(deadline) {
			t.Fatalf("attach saw no tick:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	runCLIOK(t, d, "tasks", "kill", "-s", "KILL", id)
	select {
	case <-done:
		var exit *exec.ExitError
		if !errors.As(waitErr, &exit) || exit.ExitCode() != 137 {
			t.Errorf("attach ended with %v, want exit status 137\n%s", waitErr, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("attach did not end after the task was killed:\n%s", out.String())
	}
	if st := runCLIStatus(t, d, id); st != "" {
		t.Errorf("task %s is %q after attach ended, want deleted", id, st)
	}
}

// runCLITerminal runs berth run -t under script(1), which gives it a pseudo-terminal.
func runCLITerminal(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	script := testutil.RequireBinary(t, "script")
	line := fmt.Sprintf("%s -a %s run -t --rm %s t1 sh -c 'tty; exit 3'", testutil.Binary(t, "berth"), d.Address, busyboxRef)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "-qfec", line, "/dev/null")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("run -t: %v, want exit status 3\n%q", err, out)
	}
	if !strings.Contains(string(out), "/dev/pts/") {
		t.Errorf("run -t: the process has no pty:\n%q", out)
	}
	// run -t -d, then attach from a terminal: the input reaches the shell, its status returns
	runCLIOK(t, d, "run", "-t", "-d", busyboxRef, "t3", "sh")
	line = fmt.Sprintf("%s -a %s tasks attach t3", testutil.Binary(t, "berth"), d.Address)
	cmd = exec.CommandContext(ctx, script, "-qfec", line, "/dev/null")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = pr
	go func() {
		time.Sleep(time.Second) // script forwards what it reads: let attach connect first
		_, _ = pw.WriteString("echo attached-$((6*7)); exit 4\n")
		time.Sleep(10 * time.Second)
		pw.Close()
	}()
	out, err = cmd.CombinedOutput()
	pr.Close()
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || !strings.Contains(string(out), "attached-42") {
		t.Errorf("attach -t: %v, want exit status 4\n%q", err, out)
	}
	runCLIOK(t, d, "containers", "rm", "t3")

	// without a terminal, -t is refused before anything is made
	r := runCLI(t, d, "run", "-t", "--rm", busyboxRef, "t2", "true")
	if r.code != 2 || !strings.Contains(r.stderr, "terminal") {
		t.Errorf("run -t without a terminal: %v", r)
	}
	if out := runCLIOK(t, d, "containers", "ls", "-q"); out != "" {
		t.Errorf("containers after run -t: %q", out)
	}
}

// runCLISecurity checks what a container sees, through berth run --rm.
func runCLISecurity(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	run := func(id string, args ...string) runCLIResult {
		t.Helper()
		return runCLI(t, d, append([]string{"run", "--rm", busyboxRef, id}, args...)...)
	}
	// only stdin, stdout, stderr and the directory ls itself reads: no leaked descriptors
	if r := run("x1", "sh", "-c", "ls /proc/self/fd"); r.code != 0 || strings.Fields(r.stdout) == nil ||
		strings.Join(strings.Fields(r.stdout), " ") != "0 1 2 3" {
		t.Errorf("descriptors in the container: %v", r)
	}
	// and none in pid 1 beyond its stdio
	if r := run("x2", "ls", "/proc/1/fd"); r.code != 0 || strings.Join(strings.Fields(r.stdout), " ") != "0 1 2 3" {
		t.Errorf("descriptors of the container's pid 1 (ls itself): %v", r)
	}
	// masked paths: /proc/kcore unreadable or empty, /proc/keys is /dev/null
	if r := run("x3", "cat", "/proc/kcore"); r.code == 0 && r.stdout != "" {
		t.Errorf("/proc/kcore is readable: %d bytes", len(r.stdout))
	}
	if r := run("x4", "stat", "-c", "%t,%T", "/proc/keys"); strings.TrimSpace(r.stdout) != "1,3" {
		t.Errorf("/proc/keys is not masked with /dev/null: %v", r)
	}
	// the working directory is the container's root, never a descriptor leaked from the
	// host (CVE-2024-21626)
	if r := run("x5", "readlink", "/proc/self/cwd"); r.code != 0 || r.stdout != "/\n" {
		t.Errorf("cwd: %v", r)
	}
	if r := runCLI(t, d, "run", "--rm", "--cwd", "/tmp", busyboxRef, "x6", "readlink", "/proc/self/cwd"); r.code != 0 || r.stdout != "/tmp\n" {
		t.Errorf("--cwd /tmp: %v", r)
	}
	// /proc/sys is read-only
	if r := run("x7", "sh", "-c", "echo berth > /proc/sys/kernel/hostname"); r.code == 0 || !strings.Contains(r.stderr, "Read-only") {
		t.Errorf("writing /proc/sys: %v", r)
	}
	// no new privileges, containerd's capability set
	r := run("x8", "sh", "-c", "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status")
	mustContain(t, r.stdout, "NoNewPrivs:\t1", "CapEff:\t00000000a80425fb")
}

// TestRunCLIErrors: what berth run says when it cannot run.
func TestRunCLIErrors(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	if out, err := d.Ctr("-n", "raw", "images", "import", "--no-unpack", busyboxArchive(t)); err != nil {
		t.Fatalf("import --no-unpack: %v\n%s", err, out)
	}
	r := runCLI(t, d, "-n", "raw", "run", "--rm", busyboxRef, "c1", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "is not unpacked") || !strings.Contains(r.stderr, "berth images import") {
		t.Errorf("run of an image that is not unpacked: %v", r)
	}
	r = runCLI(t, d, "-n", "raw", "run", "--rm", "docker.io/library/nothing:latest", "c1", "true")
	if r.code != 1 || !strings.Contains(r.stderr, `image "docker.io/library/nothing:latest" not found`) {
		t.Errorf("run of a missing image: %v", r)
	}
	for _, args := range [][]string{
		{"run", "--rm", "-d", busyboxRef, "c1"},
		{"run", busyboxRef},
		{"run", busyboxRef, "bad/id"},
		{"run", "--mount", "type=bind,src=/tmp", busyboxRef, "c1"},
	} {
		if r := runCLI(t, d, append([]string{"-n", "raw"}, args...)...); r.code != 2 {
			t.Errorf("berth %q: want a usage error: %v", args, r)
		}
	}
	if out := runCLIOK(t, d, "-n", "raw", "containers", "ls", "-q"); out != "" {
		t.Errorf("containers left: %q", out)
	}
	if out := runCLIOK(t, d, "-n", "raw", "snapshots", "ls", "-q"); out != "" {
		t.Errorf("snapshots left: %q", out)
	}
}

// TestRunCLISnapshots: berth snapshots and berth images mount/unmount against an imported image.
func TestRunCLISnapshots(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	if out, err := d.Ctr("images", "import", busyboxArchive(t)); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	header, rows := cliTable(t, runCLIOK(t, d, "snapshots", "ls"))
	if strings.Join(header, " ") != "KEY PARENT KIND" || len(rows) != 1 || rows[0][1] != "-" || rows[0][2] != "Committed" {
		t.Fatalf("snapshots ls: %q %q", header, rows)
	}
	chain := rows[0][0]
	if !strings.HasPrefix(chain, "sha256:") {
		t.Fatalf("chain %q", chain)
	}
	mustContain(t, runCLIOK(t, d, "snapshots", "info", chain), `"name": "`+chain+`"`, `"kind": "Committed"`)
	r := runCLI(t, d, "snapshots", "info", "nothing")
	if r.code != 1 || !strings.Contains(r.stderr, `snapshot "nothing" not found`) {
		t.Errorf("snapshots info of a missing key: %v", r)
	}

	runCLIOK(t, d, "snapshots", "prepare", "work", chain)
	if out := runCLIOK(t, d, "snapshots", "tree"); out != chain+"\n\\_ work\n" {
		t.Errorf("snapshots tree:\n%s", out)
	}
	header, rows = cliTable(t, runCLIOK(t, d, "snapshots", "usage"))
	if strings.Join(header, " ") != "KEY SIZE INODES" || len(rows) != 2 {
		t.Fatalf("snapshots usage: %q %q", header, rows)
	}
	for _, row := range rows {
		if row[0] == chain && !regexp.MustCompile(`^\d+\.\d (KiB|MiB)$`).MatchString(row[1]) {
			t.Errorf("usage of the chain: %q", row)
		}
	}
	if out := runCLIOK(t, d, "snapshots", "usage", "--bytes", chain); !regexp.MustCompile(chain + `\s+\d{6,}\s+\d+`).MatchString(out) {
		t.Errorf("snapshots usage --bytes:\n%s", out)
	}
	out := runCLIOK(t, d, "snapshots", "mounts", "/tmp/x", "work")
	if !regexp.MustCompile(`^mount -t overlay overlay /tmp/x -o \S*upperdir=\S+\n$`).MatchString(out) {
		t.Errorf("snapshots mounts:\n%s", out)
	}
	// the chain has a child: refused, and the child is named
	r = runCLI(t, d, "snapshots", "rm", chain)
	if r.code != 1 || !strings.Contains(r.stderr, "is the parent of work") || !strings.Contains(r.stderr, "berth snapshots rm work") {
		t.Errorf("snapshots rm of a parent: %v", r)
	}
	runCLIOK(t, d, "snapshots", "commit", "work-done", "work")
	runCLIOK(t, d, "snapshots", "view", "v1", "work-done")
	mustContain(t, runCLIOK(t, d, "snapshots", "ls"), "work-done", "v1")
	runCLIOK(t, d, "snapshots", "rm", "v1", "work-done")
	if out := runCLIOK(t, d, "snapshots", "ls", "-q"); out != chain+"\n" {
		t.Errorf("snapshots after rm:\n%s", out)
	}
	// ctr sees what berth made
	runCLIOK(t, d, "snapshots", "prepare", "seen", chain)
	if out, err := d.Ctr("snapshots", "ls"); err != nil || !strings.Contains(out, "seen") {
		t.Errorf("ctr snapshots ls: %v\n%s", err, out)
	}
	runCLIOK(t, d, "snapshots", "rm", "seen")

	// berth images mount/unmount, once the images group carries imageMountCommands
	r = runCLI(t, d, "images", "mount", "--help")
	testutil.Require(t, r.code == 0, "berth images mount (the images group appends imageMountCommands())")
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if out := runCLIOK(t, d, "images", "mount", busyboxRef, dir); out != dir+"\n" {
		t.Errorf("images mount printed %q", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "busybox")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("busybox in the mounted image: %v %v", fi, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err == nil {
		t.Errorf("the read-only mount is writable")
	}
	mustContain(t, runCLIOK(t, d, "snapshots", "ls"), dir, "View")
	if out, err := d.Ctr("leases", "ls"); err != nil || !strings.Contains(out, dir) {
		t.Errorf("lease of the mount: %v\n%s", err, out)
	}
	runCLIOK(t, d, "images", "unmount", "--rm", dir)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("mount point not empty after unmount: %d entries", len(entries))
	}
	if out := runCLIOK(t, d, "snapshots", "ls", "-q"); out != chain+"\n" {
		t.Errorf("snapshots after images unmount --rm:\n%s", out)
	}
	if out, _ := d.Ctr("leases", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("leases after images unmount --rm: %q", out)
	}
	// --rw: a writable snapshot
	runCLIOK(t, d, "images", "mount", "--rw", busyboxRef, dir)
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644); err != nil {
		t.Errorf("the --rw mount is not writable: %v", err)
	}
	mustContain(t, runCLIOK(t, d, "snapshots", "ls"), "Active")
	runCLIOK(t, d, "images", "unmount", "--rm", dir)
	if out := runCLIOK(t, d, "snapshots", "ls", "-q"); out != chain+"\n" {
		t.Errorf("snapshots after images unmount --rm of --rw:\n%s", out)
	}
}
