package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/berth-dev/berth/internal/oci"
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
			pids := map[string]uint32{} // every task started, over all rounds
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
	spec := oci.Default(e.ns, id, oci.Options{Args: []string{"sleep", "1000"}, Root: e.rootfs})
	b, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
	defer cancel()
	if _, err := e.cs.Create(ctx, &containers.CreateContainerRequest{Container: &containers.Container{
		ID: id, Runtime: &containers.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec: &anypb.Any{TypeUrl: specURL, Value: b},
	}}); err != nil {
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
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), "containerd-shim") || !strings.Contains(string(cmd), e.d.Address) {
			continue
		}
		// a shim launched ahead of the next task has no bundle yet
		if cwd, err := os.Readlink(filepath.Join("/proc", p.Name(), "cwd")); err == nil && strings.HasPrefix(cwd, bundles) {
			left = append(left, fmt.Sprintf("shim %s serving %s", p.Name(), cwd))
		}
	}
	for id, pid := range pids {
		if alive(int(pid)) {
			left = append(left, fmt.Sprintf("process %d of task %s", pid, id))
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], e.d.Dir) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	return left
}
