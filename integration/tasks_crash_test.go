package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testutil"
)

// TestTasksCrashLoop: berthd is killed (SIGKILL) while two clients create
// and start tasks, twice over. After each restart every task whose Start
// was answered is listed as running with the same pid; whatever the kill
// interrupted can be killed and deleted like any task; and once all are
// deleted, no shim of this berthd serves anything, no bundle is left, no
// process the tasks started runs and nothing stays mounted.
func TestTasksCrashLoop(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			pids := map[string]uint32{}    // every task seen with a pid, over all rounds
			started := map[string]uint32{} // every Start answered, over all rounds
			for round := range 2 {
				var (
					mu sync.Mutex
					wg sync.WaitGroup
				)
				acked := map[string]uint32{}
				for g := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; ; i++ {
							id := fmt.Sprintf("r%d-g%d-%d", round, g, i)
							pid, err := e.tryRun(id)
							if err != nil {
								return
							}
							mu.Lock()
							acked[id] = pid
							mu.Unlock()
						}
					}()
				}
				deadline := time.Now().Add(time.Minute)
				for {
					mu.Lock()
					n := len(acked)
					mu.Unlock()
					if n >= 3+round*2 || time.Now().After(deadline) {
						break
					}
					time.Sleep(time.Millisecond)
				}
				e.d.Kill()
				wg.Wait()
				if len(acked) == 0 {
					t.Fatalf("round %d: no task started before the kill", round)
				}
				e.d.Start()
				conn := e.d.Conn(t)
				e.cs, e.ts = containers.NewContainersClient(conn), tasks.NewTasksClient(conn)

				list, err := e.ts.List(e.ctx(), &tasks.ListTasksRequest{})
				if err != nil {
					t.Fatal(err)
				}
				listed := map[string]*task.Process{}
				for _, p := range list.Tasks {
					listed[p.ID] = p
				}
				for id, pid := range acked {
					started[id] = pid
				}
				// this round's tasks and every earlier round's
				for id, pid := range started {
					pids[id] = pid
					p, ok := listed[id]
					switch {
					case !ok:
						t.Errorf("round %d: task %s was started before the kill but is not listed after the restart", round, id)
					case p.Status != task.Status_RUNNING || p.Pid != pid:
						t.Errorf("round %d: task %s after the restart: %s, pid %d; want RUNNING, pid %d", round, id, p.Status, p.Pid, pid)
					}
				}
				for id, p := range listed {
					if _, ok := acked[id]; !ok && strings.HasPrefix(id, fmt.Sprintf("r%d-", round)) {
						t.Logf("round %d: task %s, interrupted by the kill, is listed as %s", round, id, p.Status)
						if p.Pid != 0 {
							pids[id] = p.Pid
						}
					}
				}
				t.Logf("round %d: %d started before the kill, %d tasks listed after the restart", round, len(acked), len(listed))
			}

			// every task and container goes, whatever state the kills left it in
			ctx, cancel := context.WithTimeout(e.ctx(), time.Minute)
			defer cancel()
			list, err := e.ts.List(ctx, &tasks.ListTasksRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range list.Tasks {
				// a Start the kill interrupted may have left the task stopped
				// (as with containerd): killing it is then NotFound
				_, err := e.ts.Kill(ctx, &tasks.KillRequest{ContainerID: p.ID, Signal: uint32(syscall.SIGKILL), All: true})
				if err != nil && !(p.Status == task.Status_STOPPED && errdefs.IsNotFound(native(err))) {
					t.Errorf("kill %s (%s): %v", p.ID, p.Status, err)
				}
				if _, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: p.ID}); err != nil {
					t.Errorf("wait %s: %v", p.ID, err)
				}
				if _, err := e.ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: p.ID}); err != nil {
					t.Errorf("delete task %s: %v", p.ID, err)
				}
			}
			cl, err := e.cs.List(ctx, &containers.ListContainersRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cl.Containers {
				if _, err := e.cs.Delete(ctx, &containers.DeleteContainerRequest{ID: c.ID}); err != nil {
					t.Errorf("delete container %s: %v", c.ID, err)
				}
			}

			deadline := time.Now().Add(10 * time.Second)
			for {
				left := e.leftovers(pids)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after deleting every task and container:\n%s", strings.Join(left, "\n"))
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// tryRun creates and starts a task running sleep, without failing the
// test, and returns its pid.
func (e *taskEnv) tryRun(id string) (uint32, error) {
	ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
	defer cancel()
	if err := e.newContainer(ctx, id, oci.Options{Args: []string{"sleep", "1000"}}); err != nil {
		return 0, err
	}
	if _, err := e.ts.Create(ctx, &tasks.CreateTaskRequest{ContainerID: id}); err != nil {
		return 0, err
	}
	r, err := e.ts.Start(ctx, &tasks.StartRequest{ContainerID: id})
	if err != nil {
		return 0, err
	}
	return r.Pid, nil
}

// leftovers lists what is left of the daemon's tasks: shims serving a
// bundle, bundle directories, processes of pids, mounts under the
// daemon's directory.
func (e *taskEnv) leftovers(pids map[string]uint32) []string {
	var left []string
	bundles := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.ns)
	if entries, _ := os.ReadDir(bundles); len(entries) > 0 {
		for _, b := range entries {
			left = append(left, "bundle "+b.Name())
		}
	}
	for _, pid := range shimsOf(e.d.Address, "") {
		// a shim launched ahead of the next task has no bundle yet
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && strings.HasPrefix(cwd, bundles) {
			left = append(left, fmt.Sprintf("shim %d serving %s", pid, cwd))
		}
	}
	for id, pid := range pids {
		if alive(int(pid)) {
			left = append(left, fmt.Sprintf("process %d of task %s", pid, id))
		}
	}
	for _, p := range mountsUnder(e.d.Dir) {
		left = append(left, "mount "+p)
	}
	return left
}

// TestLoadShimWithoutTask: a bundle whose shim runs but holds no task (what
// berthd leaves when it is killed after launching a task's shim and before
// the shim's Create succeeds) is found at start-up: the shim is shut down
// and the bundle removed, by the path that publishes nothing (no client
// saw the task), not as a dead shim's.
func TestLoadShimWithoutTask(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			d := shimDaemon(t, shim)
			d.Stop()
			binary := shim
			if shim == "containerd-shim-berth-v2" {
				binary = testutil.Binary(t, shim)
			} else if binary, _ = exec.LookPath(shim); binary == "" {
				t.Skipf("%s not installed", shim)
			}
			bundle := filepath.Join(d.State, "io.containerd.runtime.v2.task", "tt", "ghost")
			if err := os.MkdirAll(bundle, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, body := range map[string]string{"shim-binary-path": binary, "config.json": `{"ociVersion":"1.0.2"}`} {
				if err := os.WriteFile(filepath.Join(bundle, name), []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// the shim writes its log into the bundle's fifo (containerd's
			// runc shim exits without it)
			if err := syscall.Mkfifo(filepath.Join(bundle, "log"), 0o700); err != nil {
				t.Fatal(err)
			}
			// the shim's start verb, as containerd runs it: it launches the
			// server and writes the address file into the bundle
			cmd := exec.Command(binary, "-namespace", "tt", "-id", "ghost", "-address", d.Address, "-publish-binary", "/bin/true", "start")
			cmd.Dir = bundle
			cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+d.Address+".ttrpc")
			cmd.Stdin = strings.NewReader("\x0a\x1acontainerd.runc.v1.Options")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s start: %v: %s", shim, err, out)
			}
			pid := firstOr0(shimsOf(d.Address, "ghost"))
			if pid == 0 {
				t.Fatal("no shim server running for the bundle")
			}
			t.Cleanup(func() {
				if p := firstOr0(shimsOf(d.Address, "ghost")); p != 0 {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			})

			d.Start()
			deadline := time.Now().Add(10 * time.Second)
			for alive(pid) || dirExists(bundle) {
				if time.Now().After(deadline) {
					t.Fatalf("after the restart: shim %d alive %v, bundle left %v", pid, alive(pid), dirExists(bundle))
				}
				time.Sleep(50 * time.Millisecond)
			}
			log, err := os.ReadFile(d.Log)
			if err != nil {
				t.Fatal(err)
			}
			mustContain(t, string(log), "shim without its task")
			for _, line := range strings.Split(string(log), "\n") {
				if strings.Contains(line, "id=ghost") && strings.Contains(line, "cleaning up its task") {
					t.Errorf("the shim was handled as a dead task's, with events: %s", line)
				}
			}
			if _, err := tasks.NewTasksClient(d.Conn(t)).Get(nsCtx(t, "tt"), &tasks.GetRequest{ContainerID: "ghost"}); !errdefs.IsNotFound(native(err)) {
				t.Errorf("task of the removed bundle: %v, want NotFound", err)
			}
		})
	}
}

func firstOr0(pids []int) int {
	if len(pids) == 0 {
		return 0
	}
	return pids[0]
}

func dirExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestTasksExitWhileBerthdDown: a task exits while berthd is down. After
// the restart, the task is stopped with its exit status (Wait and Delete
// report it, from the shim), and its TaskExit, which the shim could not
// publish meanwhile, is not published twice.
func TestTasksExitWhileBerthdDown(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("brief", "sh", "-c", "sleep 0.5; exit 3")
			st, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "brief"})
			if err != nil {
				t.Fatal(err)
			}
			e.d.Kill()
			deadline := time.Now().Add(10 * time.Second)
			for alive(int(st.Pid)) {
				if time.Now().After(deadline) {
					t.Fatal("the task did not exit")
				}
				time.Sleep(20 * time.Millisecond)
			}
			e.d.Start()
			conn := e.d.Conn(t)
			e.ts = tasks.NewTasksClient(conn)
			evs := subscribeTasks(t, e, `topic=="/tasks/exit"`)

			ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
			defer cancel()
			if s := e.status("brief"); s != task.Status_STOPPED {
				t.Errorf("status after the restart: %s, want STOPPED", s)
			}
			w, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: "brief"})
			if err != nil || w.ExitStatus != 3 {
				t.Fatalf("wait: %v, %v; want status 3", w, err)
			}
			// The shim retries its publication until the restarted berthd
			// takes it, which may be before this subscription: at most one
			// arrives here, and only for this task.
			for id, n := range exitsWithin(t, evs, 1, 3*time.Second) {
				if id != "brief" || n != 1 {
					t.Errorf("after the restart: %d exit events of %q", n, id)
				}
			}
			d, err := e.ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: "brief"})
			if err != nil || d.ExitStatus != 3 {
				t.Fatalf("delete: %v, %v; want status 3", d, err)
			}
		})
	}
}
