package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	containers "github.com/containerd/containerd/api/services/containers/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

// waitingShims lists the berth shims launched by daemon d that wait for a
// task: they run in the runtime's state directory, not in a bundle.
func waitingShims(d *testutil.Daemon) []int {
	var pids []int
	for _, pid := range shimCtrdShims(d.Address, "") {
		cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
		if err == nil && alive(pid) && cwd == filepath.Join(d.State, "io.containerd.runtime.v2.task") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// eventually polls cond for up to 5 s.
func eventually(cond func() bool) bool {
	for i := 0; i < 250; i++ {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// launchSockets lists the task sockets of launched shims in the state dir.
func launchSockets(t *testing.T, state string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(state, "s", "l-*"))
	return m
}

// TestShimLaunchedAhead: berthd launches its own shim directly and keeps
// one waiting; a task takes the waiting one, another is launched, a killed
// waiting shim does not break Create, a task recreated right after Delete
// works, and a waiting shim leaves with berthd (stopped or killed),
// removing its socket.
func TestShimLaunchedAhead(t *testing.T) {
	d := shimDaemon(t, "containerd-shim-berth-v2")
	conn := d.Conn(t)
	e := &taskEnv{t: t, d: d, ns: "tl", rootfs: busyboxRootfs(t), cs: containers.NewContainersClient(conn), ts: tasks.NewTasksClient(conn)}
	t.Cleanup(e.killAll)

	var first []int
	if !eventually(func() bool { first = waitingShims(d); return len(first) == 1 }) {
		t.Fatalf("after start-up: %d waiting shims, want 1", len(first))
	}
	out := e.create("a", "echo", "one")
	bundle := filepath.Join(d.State, "io.containerd.runtime.v2.task", e.ns, "a")
	if pid := shimPidOf(t, bundle); pid != first[0] {
		t.Errorf("task served by shim %d, want the waiting one %d", pid, first[0])
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "address")); err != nil || !strings.Contains(string(b), "/s/l-") {
		t.Errorf("bundle address %q, %v", b, err)
	}
	var second []int
	if !eventually(func() bool { second = waitingShims(d); return len(second) == 1 && second[0] != first[0] }) {
		t.Fatalf("after a task took the waiting shim: waiting %v, want one other than %d", second, first[0])
	}

	// run to completion, delete, and create again under the same id at once.
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	if w, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "a"}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %v %v", w, err)
	}
	if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "a", Stdout: "file://" + out, Stderr: "file://" + out}); err != nil {
		t.Fatalf("create again right after delete: %v", err)
	}
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	if w, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "a"}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("wait: %v %v", w, err)
	}
	if b, _ := os.ReadFile(out); string(b) != "one\none\n" {
		t.Errorf("output of both runs %q", b)
	}
	if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}

	// a waiting shim killed: the next Create launches another and works;
	// the killed one is reaped (berthd is its parent).
	var w []int
	if !eventually(func() bool { w = waitingShims(d); return len(w) == 1 }) {
		t.Fatalf("waiting shims %v", w)
	}
	if err := syscall.Kill(w[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(w[0]))); return os.IsNotExist(err) }) {
		t.Errorf("killed waiting shim %d was not reaped", w[0])
	}
	e.create("b", "true")
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "b"}); err != nil {
		t.Fatal(err)
	}

	// the waiting shim leaves with berthd, stopped or killed, and so does
	// its socket; the shims of deleted tasks are gone and left no socket.
	for _, stop := range []struct {
		name string
		f    func()
	}{{"SIGTERM", d.Stop}, {"SIGKILL", d.Kill}} {
		if !eventually(func() bool { w = waitingShims(d); return len(w) == 1 }) {
			t.Fatalf("before %s: waiting shims %v", stop.name, w)
		}
		stop.f()
		if !eventually(func() bool { return len(shimCtrdShims(d.Address, "")) == 0 }) {
			t.Errorf("after berthd's %s: shims %v still run", stop.name, shimCtrdShims(d.Address, ""))
		}
		if !eventually(func() bool { return len(launchSockets(t, d.State)) == 0 }) {
			t.Errorf("after berthd's %s: sockets %v left", stop.name, launchSockets(t, d.State))
		}
		d.Start()
	}
}

// TestShimLaunchedDetails: a launched shim is one step more killable than
// berthd (oom_score_adj), as a shim run through start is; a task whose
// Delete was answered just before berthd died stays deleted after the
// restart, quietly; a shim that cannot take its task (a shim cgroup that
// does not exist) fails the Create and leaves no socket behind.
func TestShimLaunchedDetails(t *testing.T) {
	d := shimDaemon(t, "containerd-shim-berth-v2")
	conn := d.Conn(t)
	e := &taskEnv{t: t, d: d, ns: "tl", rootfs: busyboxRootfs(t), cs: containers.NewContainersClient(conn), ts: tasks.NewTasksClient(conn)}
	t.Cleanup(e.killAll)

	e.create("a", "true")
	bundle := filepath.Join(d.State, "io.containerd.runtime.v2.task", e.ns, "a")
	shim := shimPidOf(t, bundle)
	score := func(pid int) int {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "oom_score_adj"))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	if want := min(score(d.Pid())+1, 1000); score(shim) != want {
		t.Errorf("shim oom_score_adj %d, want berthd's + 1 = %d", score(shim), want)
	}

	// berthd dies between answering Delete and removing the task: the
	// bundle still holds the marker that the Delete leaves.
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
	d.Kill()
	if err := os.WriteFile(filepath.Join(bundle, "deleted"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Start()
	e.ts = tasks.NewTasksClient(d.Conn(t))
	list, err := e.ts.List(e.ctx(), &tasks.ListTasksRequest{})
	if err != nil || len(list.Tasks) != 0 {
		t.Fatalf("tasks after a restart that finished a delete: %v, %v", list.GetTasks(), err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("bundle of the deleted task left: %v", err)
	}
	if !eventually(func() bool { return !alive(shim) }) {
		t.Errorf("shim %d of the deleted task still runs", shim)
	}
	out := filepath.Join(t.TempDir(), "again.out")
	if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "a", Stdout: "file://" + out}); err != nil {
		t.Fatalf("create under the deleted task's id: %v", err)
	}
	if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}

	// a shim cgroup that cannot be joined: Create fails, nothing is left.
	opts, _ := anypb.New(&runcoptions.Options{ShimCgroup: "/berth-test-no-such-cgroup/x"})
	_, err = e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "a", Options: opts, Stdout: "file://" + out})
	if err == nil {
		t.Fatal("create with a shim cgroup that does not exist succeeded")
	}
	if !eventually(func() bool { return len(launchSockets(t, d.State)) <= 1 }) { // the waiting shim's
		t.Errorf("sockets after a failed hand-over: %v", launchSockets(t, d.State))
	}
	if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "a", Stdout: "file://" + out}); err != nil {
		t.Fatalf("create after a failed one: %v", err)
	}
	if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "a"}); err != nil {
		t.Fatal(err)
	}
}

// TestShimFdsStayFlat: runc calls and execs leave no descriptor behind in
// the shim (each runc command's pidfd used to stay open until a garbage
// collection, which a shim rarely runs).
func TestShimFdsStayFlat(t *testing.T) {
	d := shimDaemon(t, "containerd-shim-berth-v2")
	conn := d.Conn(t)
	e := &taskEnv{t: t, d: d, ns: "tl", rootfs: busyboxRootfs(t), cs: containers.NewContainersClient(conn), ts: tasks.NewTasksClient(conn)}
	t.Cleanup(e.killAll)
	e.create("s", "sleep", "600")
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "s"}); err != nil {
		t.Fatal(err)
	}
	shim := shimPidOf(t, filepath.Join(d.State, "io.containerd.runtime.v2.task", e.ns, "s"))
	fds := func() int {
		ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(shim), "fd"))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	out := filepath.Join(t.TempDir(), "exec.out")
	proc, _ := json.Marshal(specs.Process{Args: []string{"true"}, Cwd: "/", Env: []string{"PATH=/bin"}})
	run := func(id string) {
		t.Helper()
		if _, err := e.ts.Exec(e.ctx(), &tasks.ExecProcessRequest{ContainerID: "s", ExecID: id, Stdout: "file://" + out, Stderr: "file://" + out,
			Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: proc}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "s", ExecID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "s", ExecID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ts.DeleteProcess(e.ctx(), &tasks.DeleteProcessRequest{ContainerID: "s", ExecID: id}); err != nil {
			t.Fatal(err)
		}
	}
	run("warm")
	before := fds()
	for i := range 10 {
		run("e" + strconv.Itoa(i))
	}
	if after := fds(); after > before {
		t.Errorf("shim fds: %d after one exec, %d after ten more", before, after)
	}
}
