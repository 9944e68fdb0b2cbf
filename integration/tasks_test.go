package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testutil"
	containers "github.com/containerd/containerd/api/services/containers/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// busyboxRootfs makes a root filesystem holding the static busybox.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	bb := testutil.RequireBinary(t, "busybox")
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "echo", "ls", "sleep", "true", "cat", "ps", "readlink"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// shimDaemon starts berthd with io.containerd.runc.v2 served by shim.
func shimDaemon(t *testing.T, shim string) *testutil.Daemon {
	t.Helper()
	testutil.RequireBinary(t, "runc")
	if shim != "containerd-shim-berth-v2" {
		testutil.RequireBinary(t, shim)
	}
	cfg := filepath.Join(t.TempDir(), "config.toml")
	body := fmt.Sprintf("version = 2\n[plugins.\"io.containerd.runtime.v2.task\".shims]\n\"io.containerd.runc.v2\" = %q\n", shim)
	if shim == "containerd-shim-berth-v2" {
		body = fmt.Sprintf("version = 2\n[plugins.\"io.containerd.runtime.v2.task\".shims]\n\"io.containerd.runc.v2\" = %q\n", testutil.Binary(t, shim))
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return testutil.StartDaemon(t, "--config", cfg)
}

type taskEnv struct {
	t      *testing.T
	d      *testutil.Daemon
	ns     string
	rootfs string
	cs     containers.ContainersClient
	ts     tasks.TasksClient
}

func newTaskEnv(t *testing.T, shim string) *taskEnv {
	d := shimDaemon(t, shim)
	conn := d.Conn(t)
	e := &taskEnv{t: t, d: d, ns: "tt", rootfs: busyboxRootfs(t), cs: containers.NewContainersClient(conn), ts: tasks.NewTasksClient(conn)}
	t.Cleanup(e.killAll)
	return e
}

// killAll leaves no container of e's namespace running after a test,
// passed or failed (cleanTasks).
func (e *taskEnv) killAll() { cleanTasks(e.t, e.d, e.ns) }

// cleanTasks deletes every task of namespace ns through a connection of its
// own (the test's may be closed by now), restarting berthd if the test left
// it stopped, then kills what a test that failed half-way left: the shims of
// this daemon still serving a bundle, and their containers. A shim that
// still serves a bundle 10 s after its task was deleted fails the test.
func cleanTasks(t *testing.T, d *testutil.Daemon, ns string) {
	if d.Exited() {
		d.Start()
	}
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		defer conn.Close()
		ts := tasks.NewTasksClient(conn)
		ctx, cancel := context.WithTimeout(testutil.WithNamespace(context.Background(), ns), 30*time.Second)
		defer cancel()
		list, err := ts.List(ctx, &tasks.ListTasksRequest{})
		if err != nil {
			t.Logf("clean-up: list tasks: %v", err)
		}
		for _, p := range list.GetTasks() {
			_, _ = ts.Kill(ctx, &tasks.KillRequest{ContainerID: p.ID, Signal: uint32(syscall.SIGKILL), All: true})
			_, _ = ts.Wait(ctx, &tasks.WaitRequest{ContainerID: p.ID})
			_, _ = ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: p.ID})
		}
	}
	// a deleted task's shim finishes its shutdown just after the answer;
	// one still serving a bundle after that is a leak
	bundles := filepath.Join(d.State, "io.containerd.runtime.v2.task")
	serving := func() map[int]string {
		m := map[int]string{}
		for _, pid := range shimsOf(d.Address, "") {
			// a shim launched ahead of the next task serves no bundle yet,
			// and goes with berthd
			if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && strings.HasPrefix(cwd, bundles+"/") {
				m[pid] = cwd
			}
		}
		return m
	}
	left := serving()
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = serving() {
		time.Sleep(50 * time.Millisecond)
	}
	for pid, cwd := range left {
		for _, child := range childrenOf(pid) {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("clean-up: shim %d of %s still ran 10s after its task was deleted; killed it", pid, cwd)
	}
}

// procsMatching lists the processes for which match, given the pid and the
// command line, is true.
func procsMatching(match func(pid int, args []string) bool) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && match(pid, strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimsOf lists the shim processes of the daemon at address, of any task
// or of task id.
func shimsOf(address, id string) []int {
	return procsMatching(func(_ int, args []string) bool {
		return strings.Contains(args[0], "containerd-shim") && slices.Contains(args, address) &&
			(id == "" || slices.Contains(args, id))
	})
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				kids = append(kids, child)
			}
		}
	}
	return kids
}

func (e *taskEnv) ctx() context.Context { return nsCtx(e.t, e.ns) }

// create makes a container running args on the busybox rootfs and its task,
// with stdout and stderr appended to a file; it returns that file.
func (e *taskEnv) create(id string, args ...string) string {
	e.t.Helper()
	out := filepath.Join(e.t.TempDir(), id+".out")
	e.createWith(id, &tasks.CreateTaskRequest{ContainerID: id, Stdout: "file://" + out, Stderr: "file://" + out}, args...)
	return out
}

// createWith makes a container running args on the busybox rootfs and its
// task with req.
func (e *taskEnv) createWith(id string, req *tasks.CreateTaskRequest, args ...string) {
	e.t.Helper()
	if err := e.newContainer(e.ctx(), id, oci.Options{Args: args}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.ts.Create(e.ctx(), req); err != nil {
		e.t.Fatalf("create task %s: %v", id, err)
	}
}

// newContainer records container id, with the default spec for o on the
// busybox rootfs.
func (e *taskEnv) newContainer(ctx context.Context, id string, o oci.Options) error {
	o.Root = e.rootfs
	b, err := json.Marshal(oci.Default(e.ns, id, o))
	if err != nil {
		return err
	}
	if _, err := e.cs.Create(ctx, &containers.CreateContainerRequest{Container: &containers.Container{
		ID: id, Runtime: &containers.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec: &anypb.Any{TypeUrl: specURL, Value: b},
	}}); err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	return nil
}

func (e *taskEnv) status(id string) task.Status {
	e.t.Helper()
	r, err := e.ts.Get(e.ctx(), &tasks.GetRequest{ContainerID: id})
	if err != nil {
		e.t.Fatalf("get %s: %v", id, err)
	}
	return r.Process.Status
}

func taskShims(t *testing.T) []string {
	shims := []string{"containerd-shim-runc-v2"}
	if _, err := os.Stat(filepath.Join(testutil.RepoRoot(), "cmd", "containerd-shim-berth-v2")); err == nil {
		shims = append([]string{"containerd-shim-berth-v2"}, shims...)
	}
	return shims
}

func TestTasksRunToCompletion(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			evs := subscribeTasks(t, e, `topic~=|^/tasks/|`)
			for _, tc := range []struct {
				id   string
				args []string
				code uint32
				out  string
			}{
				{"ok", []string{"echo", "hello from berth"}, 0, "hello from berth\n"},
				{"fails", []string{"sh", "-c", "echo bye; exit 3"}, 3, "bye\n"},
			} {
				out := e.create(tc.id, tc.args...)
				if st := e.status(tc.id); st != task.Status_CREATED {
					t.Errorf("%s: status %v before start, want CREATED", tc.id, st)
				}
				// Wait before Start, as ctr does
				waited := make(chan *tasks.WaitResponse, 1)
				go func() {
					r, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: tc.id})
					if err != nil {
						t.Errorf("wait %s: %v", tc.id, err)
					}
					waited <- r
				}()
				time.Sleep(50 * time.Millisecond)
				if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: tc.id}); err != nil {
					t.Fatalf("start %s: %v", tc.id, err)
				}
				var w *tasks.WaitResponse
				select {
				case w = <-waited:
				case <-time.After(30 * time.Second):
					t.Fatalf("%s did not exit", tc.id)
				}
				if w == nil || w.ExitStatus != tc.code {
					t.Fatalf("%s: wait %v, want status %d", tc.id, w, tc.code)
				}
				if st := e.status(tc.id); st != task.Status_STOPPED {
					t.Errorf("%s: status %v after exit", tc.id, st)
				}
				b, _ := os.ReadFile(out)
				if string(b) != tc.out {
					t.Errorf("%s: output %q, want %q", tc.id, b, tc.out)
				}
				d, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: tc.id})
				if err != nil || d.ExitStatus != tc.code {
					t.Fatalf("delete %s: %v %v", tc.id, d, err)
				}
				if _, err := e.ts.Get(e.ctx(), &tasks.GetRequest{ContainerID: tc.id}); !errdefs.IsNotFound(native(err)) {
					t.Errorf("get after delete: %v", err)
				}
				// the shim's shutdown and the bundle's removal finish just
				// after Delete answers.
				bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.ns, tc.id)
				for i := 0; i < 100; i++ {
					if _, err := os.Stat(bundle); os.IsNotExist(err) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := os.Stat(bundle); !os.IsNotExist(err) {
					t.Errorf("bundle of %s left behind: %v", tc.id, err)
				}
			}
			// events: create, start, exit, delete in order, exactly one exit per task
			var seen []string
			deadline := time.After(10 * time.Second)
			for len(seen) < 8 {
				ch := make(chan string, 1)
				go func() {
					env, err := evs.Recv()
					if err != nil {
						ch <- "error: " + err.Error()
						return
					}
					ch <- env.Topic
				}()
				select {
				case topic := <-ch:
					seen = append(seen, topic)
				case <-deadline:
					t.Fatalf("events seen %v", seen)
				}
			}
			want := "/tasks/create /tasks/start /tasks/exit /tasks/delete /tasks/create /tasks/start /tasks/exit /tasks/delete"
			if strings.Join(seen, " ") != want {
				t.Errorf("events %v\nwant %s", seen, want)
			}
		})
	}
}

func TestTasksLongRunning(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("sleeper", "sleep", "1000")
			st, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "sleeper"})
			if err != nil {
				t.Fatal(err)
			}
			list, err := e.ts.List(e.ctx(), &tasks.ListTasksRequest{})
			if err != nil || len(list.Tasks) != 1 || list.Tasks[0].Status != task.Status_RUNNING || list.Tasks[0].Pid != st.Pid {
				t.Fatalf("list: %v %v", list, err)
			}
			// exec
			execOut := filepath.Join(t.TempDir(), "exec.out")
			proc, _ := json.Marshal(specs.Process{Args: []string{"ls", "/"}, Cwd: "/", Env: []string{"PATH=/bin"}})
			_, err = e.ts.Exec(e.ctx(), &tasks.ExecProcessRequest{ContainerID: "sleeper", ExecID: "e1", Stdout: "file://" + execOut, Stderr: "file://" + execOut, // containerd 1.6 runc shim panics on file:// stdout without stderr
				Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: proc}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "sleeper", ExecID: "e1"}); err != nil {
				t.Fatal(err)
			}
			w, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "sleeper", ExecID: "e1"})
			if err != nil || w.ExitStatus != 0 {
				t.Fatalf("exec wait: %v %v", w, err)
			}
			b, _ := os.ReadFile(execOut)
			if !strings.Contains(string(b), "bin") || !strings.Contains(string(b), "proc") {
				t.Errorf("exec ls output %q", b)
			}
			if _, err := e.ts.DeleteProcess(e.ctx(), &tasks.DeleteProcessRequest{ContainerID: "sleeper", ExecID: "e1"}); err != nil {
				t.Fatal(err)
			}
			pids, err := e.ts.ListPids(e.ctx(), &tasks.ListPidsRequest{ContainerID: "sleeper"})
			if err != nil || len(pids.Processes) == 0 || pids.Processes[0].Pid != st.Pid {
				t.Fatalf("pids: %v %v", pids, err)
			}
			if _, err := e.ts.Pause(e.ctx(), &tasks.PauseTaskRequest{ContainerID: "sleeper"}); err != nil {
				t.Fatal(err)
			}
			if s := e.status("sleeper"); s != task.Status_PAUSED {
				t.Errorf("after pause: %v", s)
			}
			if _, err := e.ts.Resume(e.ctx(), &tasks.ResumeTaskRequest{ContainerID: "sleeper"}); err != nil {
				t.Fatal(err)
			}
			if s := e.status("sleeper"); s != task.Status_RUNNING {
				t.Errorf("after resume: %v", s)
			}
			m, err := e.ts.Metrics(e.ctx(), &tasks.MetricsRequest{Filters: []string{"id==sleeper"}})
			if err != nil || len(m.Metrics) != 1 || m.Metrics[0].Data == nil || !strings.Contains(m.Metrics[0].Data.TypeUrl, "io.containerd.cgroups.v") {
				t.Errorf("metrics: %v %v", m, err)
			}
			if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "sleeper"}); !errdefs.IsFailedPrecondition(native(err)) {
				t.Errorf("delete while running: %v", err)
			}
			// checkpoint needs criu: without it, a clear error of the right class
			if _, err := exec.LookPath("criu"); err != nil {
				_, err := e.ts.Checkpoint(e.ctx(), &tasks.CheckpointTaskRequest{ContainerID: "sleeper"})
				if shim == "containerd-shim-berth-v2" && (!errdefs.IsFailedPrecondition(native(err)) || !strings.Contains(err.Error(), "criu is not installed")) {
					t.Errorf("checkpoint without criu: %v, want FailedPrecondition naming criu", err)
				}
				if err == nil {
					t.Errorf("checkpoint without criu succeeded")
				}
			}

			// restart berthd with SIGKILL: the task keeps running and is reattached
			e.d.Kill()
			if !alive(int(st.Pid)) {
				t.Fatalf("container died with berthd")
			}
			e.d.Start()
			e.ts = tasks.NewTasksClient(e.d.Conn(t))
			r, err := e.ts.Get(e.ctx(), &tasks.GetRequest{ContainerID: "sleeper"})
			if err != nil || r.Process.Status != task.Status_RUNNING || r.Process.Pid != st.Pid {
				t.Fatalf("after restart: %v %v", r, err)
			}
			if _, err := e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "sleeper", Signal: uint32(syscall.SIGKILL)}); err != nil {
				t.Fatal(err)
			}
			w, err = e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "sleeper"})
			if err != nil || w.ExitStatus != 137 {
				t.Fatalf("wait after kill: %v %v", w, err)
			}
			d, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "sleeper"})
			if err != nil || d.ExitStatus != 137 {
				t.Fatalf("delete: %v %v", d, err)
			}
		})
	}
}

// TestTasksShimKilled: a shim that dies is reported and cleaned up.
func TestTasksShimKilled(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("victim", "sleep", "1000")
			started, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "victim"})
			if err != nil {
				t.Fatal(err)
			}
			evs := subscribeTasks(t, e, `topic=="/tasks/exit"`)
			bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.ns, "victim")
			shimPid := shimPidOf(t, bundle)
			if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if _, err := evs.Recv(); err != nil {
				t.Fatalf("no exit event after the shim died: %v", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := e.ts.Get(e.ctx(), &tasks.GetRequest{ContainerID: "victim"})
				if errdefs.IsNotFound(native(err)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("task still there after its shim died: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := os.Stat(bundle); !os.IsNotExist(err) {
				t.Errorf("bundle left after shim death: %v", err)
			}
			if alive(int(started.Pid)) {
				t.Errorf("container init %d still runs after its shim died and was cleaned up", started.Pid)
			}
		})
	}
}

// shimPidOf finds the shim serving a bundle: the process whose cwd it is.
func shimPidOf(t *testing.T, bundle string) int {
	t.Helper()
	pids := procsMatching(func(pid int, args []string) bool {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		return err == nil && cwd == bundle && strings.Contains(args[0], "containerd-shim")
	})
	if len(pids) == 0 {
		t.Fatalf("no shim found for %s", bundle)
	}
	return pids[0]
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// TestTasksOutputEOF: once a process has exited and its output is copied,
// the client reading the stdout FIFO sees end of file, before any Delete
// (as with containerd's shim).
func TestTasksOutputEOF(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			if err := e.newContainer(e.ctx(), "eof", oci.Options{Args: []string{"echo", "last words"}}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			stdout := filepath.Join(dir, "stdout")
			if err := syscall.Mkfifo(stdout, 0o600); err != nil {
				t.Fatal(err)
			}
			// open our read end first, non-blocking, as containerd's cio does
			fd, err := syscall.Open(stdout, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), stdout)
			defer f.Close()
			if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "eof", Stdout: stdout, Stderr: stdout}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "eof"}); err != nil {
				t.Fatal(err)
			}
			// f stays non-blocking: reads park in Go's poller, and closing f
			// ends a read still waiting; writers are open since Create
			done := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(f); done <- b }()
			select {
			case b := <-done:
				if string(b) != "last words\n" {
					t.Errorf("output %q", b)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no end of file on stdout after the process exited (the shim keeps the FIFO open)")
			}
			if _, err := e.ts.Wait(e.ctx(), &tasks.WaitRequest{ContainerID: "eof"}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "eof"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTasksTerminalStdinEOF: when the client's stdin of a terminal process
// ends (its writer gone and CloseIO), the shim hangs the terminal up, as
// containerd's does: cat, reading the terminal, ends, and what it echoed
// before has been copied out.
func TestTasksTerminalStdinEOF(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			if err := e.newContainer(e.ctx(), "tty", oci.Options{Args: []string{"cat"}, Terminal: true}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			// O_RDWR opens do not wait for the shim, which opens its ends in Create.
			stdin, w := openFifo(t, filepath.Join(dir, "stdin"))
			out, r := openFifo(t, filepath.Join(dir, "out"))
			var mu sync.Mutex
			var got []byte
			go func() {
				b := make([]byte, 4096)
				for {
					n, err := r.Read(b)
					mu.Lock()
					got = append(got, b[:n]...)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
			output := func() string { mu.Lock(); defer mu.Unlock(); return string(got) }
			if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "tty", Terminal: true, Stdin: stdin, Stdout: out}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "tty"}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(w, "typed\n"); err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				if strings.Count(output(), "typed") == 2 { // the echo and cat's copy
					break
				}
				if i == 250 {
					t.Fatalf("terminal output %q, want typed twice", output())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if st := e.status("tty"); st != task.Status_RUNNING {
				t.Fatalf("status %v before stdin ends", st)
			}
			w.Close()
			if _, err := e.ts.CloseIO(e.ctx(), &tasks.CloseIORequest{ContainerID: "tty", Stdin: true}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(e.ctx(), 10*time.Second)
			defer cancel()
			if _, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: "tty"}); err != nil {
				t.Fatalf("cat still runs 10 s after its terminal's stdin ended: %v", err)
			}
			if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: "tty"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// openFifo makes a FIFO and opens it read-write; it is closed at the end of
// the test.
func openFifo(t *testing.T, path string) (string, *os.File) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

// TestTasksKill: a signal reaches init (a trap sees it), SIGKILL ends a
// paused task, and a task that has exited answers NotFound.
func TestTasksKill(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			wait := func(id string, want uint32) {
				t.Helper()
				ctx, cancel := context.WithTimeout(e.ctx(), 10*time.Second)
				defer cancel()
				w, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: id})
				if err != nil || w.ExitStatus != want {
					t.Fatalf("%s: wait %v %v, want exit status %d", id, w, err, want)
				}
			}
			out := e.create("trap", "sh", "-c", `trap "exit 3" USR1; echo ready; while :; do sleep 0.1; done`)
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "trap"}); err != nil {
				t.Fatal(err)
			}
			if !eventually(func() bool { b, _ := os.ReadFile(out); return string(b) == "ready\n" }) {
				t.Fatal("the trap was not set up")
			}
			if _, err := e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "trap", Signal: uint32(syscall.SIGUSR1)}); err != nil {
				t.Fatal(err)
			}
			wait("trap", 3)
			if _, err := e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "trap", Signal: uint32(syscall.SIGKILL)}); !errdefs.IsNotFound(native(err)) {
				t.Errorf("kill of an exited task: %v, want NotFound", err)
			}

			e.create("paused", "sleep", "600")
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "paused"}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Pause(e.ctx(), &tasks.PauseTaskRequest{ContainerID: "paused"}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "paused", Signal: uint32(syscall.SIGKILL)}); err != nil {
				t.Fatal(err)
			}
			wait("paused", 137)
			for _, id := range []string{"trap", "paused"} {
				if _, err := e.ts.Delete(e.ctx(), &tasks.DeleteTaskRequest{ContainerID: id}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
