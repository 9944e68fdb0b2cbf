package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testutil"
)

// runcKillsInit is a runc that kills the container's init as soon as
// `create` has made it, as the OOM killer may (containerd's runc-fp
// "issue9103" profile).
const runcKillsInit = `#!/bin/sh
prev= pidfile= create=
for a; do
  [ "$a" = create ] && create=1
  [ "$prev" = --pid-file ] && pidfile=$a
  prev=$a
done
[ -n "$create" ] || exec runc "$@"
runc "$@" || exit $?
kill -9 "$(cat "$pidfile")"
`

// TestTasksInitKilledDuringCreate: the container's init dies between
// `runc create` and Start (containerd#9103). The task is created, its Wait
// returns 137 without a Start, it is STOPPED, exactly one TaskExit is
// published, and Delete reports the status. Only berth's shim: Debian's
// containerd-shim-runc-v2 (1.6.20) predates containerd's fix.
func TestTasksInitKilledDuringCreate(t *testing.T) {
	e := newTaskEnv(t, "containerd-shim-berth-v2")
	testutil.RequireBinary(t, "runc")
	fp := filepath.Join(t.TempDir(), "runc-fp")
	if err := os.WriteFile(fp, []byte(runcKillsInit), 0o755); err != nil {
		t.Fatal(err)
	}
	evs := subscribeTasks(t, e, `topic~="/tasks/"`)
	opts, err := anypb.New(&runcoptions.Options{BinaryName: fp})
	if err != nil {
		t.Fatal(err)
	}
	e.createWith("oom", &tasks.CreateTaskRequest{ContainerID: "oom", Options: opts}, "sleep", "30")

	ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
	defer cancel()
	w, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: "oom"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait: %v, %v; want status 137", w, err)
	}
	if s := e.status("oom"); s != task.Status_STOPPED {
		t.Errorf("status %s, want STOPPED", s)
	}
	if _, err := e.ts.Start(ctx, &tasks.StartRequest{ContainerID: "oom"}); err == nil {
		t.Errorf("Start of a task whose init is dead succeeded")
	}
	del, err := e.ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: "oom"})
	if err != nil || del.ExitStatus != 137 {
		t.Fatalf("delete: %v, %v; want status 137", del, err)
	}
	got := topics(t, evs, "/tasks/delete")
	t.Logf("events %v", got)
	if n := count(got, "/tasks/exit"); n != 1 {
		t.Errorf("%d TaskExit events, want 1: %v", n, got)
	}
	if got[0] != "/tasks/create" {
		t.Errorf("events %v, want /tasks/create first", got)
	}
}

// TestTasksExecNotFound: an exec of a command the container lacks fails at
// Start with a clear error, publishes no TaskExit and no TaskExecStarted
// (containerd#6429), can be deleted, and leaves the task running.
func TestTasksExecNotFound(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("box", "sleep", "1000")
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "box"}); err != nil {
				t.Fatal(err)
			}
			evs := subscribeTasks(t, e, `topic~="/tasks/"`)
			proc, _ := json.Marshal(specs.Process{Args: []string{"/no/such/command"}, Cwd: "/", Env: []string{"PATH=/bin"}})
			out := filepath.Join(t.TempDir(), "exec.out")
			if _, err := e.ts.Exec(e.ctx(), &tasks.ExecProcessRequest{ContainerID: "box", ExecID: "x1", Stdout: "file://" + out, Stderr: "file://" + out,
				Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: proc}}); err != nil {
				t.Fatal(err)
			}
			_, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "box", ExecID: "x1"})
			if err == nil {
				t.Fatal("Start of an exec of a missing command succeeded")
			}
			mustContain(t, err.Error(), "/no/such/command")
			if _, err := e.ts.DeleteProcess(e.ctx(), &tasks.DeleteProcessRequest{ContainerID: "box", ExecID: "x1"}); err != nil && !errdefs.IsNotFound(native(err)) {
				t.Errorf("delete of the failed exec: %v", err)
			}
			if s := e.status("box"); s != task.Status_RUNNING {
				t.Errorf("task after the failed exec: %s", s)
			}
			// a marker event ends the stream to read
			if _, err := e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "box", Signal: 9}); err != nil {
				t.Fatal(err)
			}
			got := topics(t, evs, "/tasks/exit")
			want := []string{"/tasks/exec-added", "/tasks/exit"}
			if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
				t.Errorf("events %v, want %v (no exit or start of the failed exec)", got, want)
			}
		})
	}
}

// subscribeTasks returns a stream of the task events of e's namespace matching
// filter.
func subscribeTasks(t *testing.T, e *taskEnv, filter string) eventsapi.Events_SubscribeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx())
	t.Cleanup(cancel)
	evs, err := eventsapi.NewEventsClient(e.d.Conn(t)).Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the subscription is in place
	return evs
}

// topics reads events until one with topic last, and returns their topics.
func topics(t *testing.T, evs eventsapi.Events_SubscribeClient, last string) []string {
	t.Helper()
	var got []string
	done := make(chan struct{})
	timer := time.AfterFunc(20*time.Second, func() { close(done) })
	defer timer.Stop()
	for {
		select {
		case <-done:
			t.Fatalf("no %s event within 20s; got %v", last, got)
		default:
		}
		env, err := evs.Recv()
		if err != nil {
			t.Fatalf("events: %v (got %v)", err, got)
		}
		got = append(got, env.Topic)
		if env.Topic == last {
			return got
		}
	}
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestTasksExecsWhenInitDies: init is killed while execs are being started
// (containerd#10589). Every exec whose Start succeeded has its exit
// reported (Wait returns, one TaskExit each), one that failed has none, and
// the task can be deleted.
func TestTasksExecsWhenInitDies(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("race", "sleep", "1000")
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "race"}); err != nil {
				t.Fatal(err)
			}
			evs := subscribeTasks(t, e, `topic=="/tasks/exit"`)
			proc, _ := json.Marshal(specs.Process{Args: []string{"sleep", "1000"}, Cwd: "/", Env: []string{"PATH=/bin"}})
			var started []string
			for i := range 8 {
				id := fmt.Sprintf("x%d", i)
				if i == 3 {
					// init goes while the next execs are on their way
					go e.ts.Kill(e.ctx(), &tasks.KillRequest{ContainerID: "race", Signal: 9})
				}
				if _, err := e.ts.Exec(e.ctx(), &tasks.ExecProcessRequest{ContainerID: "race", ExecID: id,
					Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: proc}}); err != nil {
					continue // the task has stopped
				}
				if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "race", ExecID: id}); err == nil {
					started = append(started, id)
				}
			}
			if len(started) < 3 {
				t.Fatalf("only %v started", started)
			}
			ctx, cancel := context.WithTimeout(e.ctx(), 20*time.Second)
			defer cancel()
			for _, id := range append([]string{""}, started...) {
				if _, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: "race", ExecID: id}); err != nil {
					t.Errorf("wait for exec %q: %v", id, err)
				}
			}
			// one exit per started process, and no more
			exits := exitsWithin(t, evs, len(started)+1, 20*time.Second)
			for _, id := range append([]string{"race"}, started...) {
				if exits[id] != 1 {
					t.Errorf("exit events of %s: %d, want 1 (all: %v)", id, exits[id], exits)
				}
			}
			if len(exits) != len(started)+1 {
				t.Errorf("exit events of processes never started: %v (started %v)", exits, started)
			}
			if _, err := e.ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: "race"}); err != nil {
				t.Errorf("delete: %v", err)
			}
		})
	}
}

// TestTasksRuncStateRemoved: the container is deleted behind the shim's
// back (`runc delete --force` from outside). The shim reports the exit,
// the task is stopped, and it can be deleted.
func TestTasksRuncStateRemoved(t *testing.T) {
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			e := newTaskEnv(t, shim)
			e.create("gone", "sleep", "1000")
			if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "gone"}); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(e.d.State, "runc", e.ns)
			if shim != "containerd-shim-berth-v2" {
				root = filepath.Join("/run/containerd/runc", e.ns)
			}
			if out, err := exec.Command("runc", "--root", root, "delete", "--force", "gone").CombinedOutput(); err != nil {
				t.Fatalf("runc delete: %v: %s", err, out)
			}
			ctx, cancel := context.WithTimeout(e.ctx(), 20*time.Second)
			defer cancel()
			w, err := e.ts.Wait(ctx, &tasks.WaitRequest{ContainerID: "gone"})
			if err != nil || w.ExitStatus != 137 {
				t.Fatalf("wait: %v, %v; want status 137", w, err)
			}
			if s := e.status("gone"); s != task.Status_STOPPED {
				t.Errorf("status %s, want STOPPED", s)
			}
			if _, err := e.ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: "gone"}); err != nil {
				t.Errorf("delete: %v", err)
			}
		})
	}
}

// exitsWithin reads TaskExit events until want of them have come or max
// has passed, then for a short while more (for extras), and counts them by
// process id.
func exitsWithin(t *testing.T, evs eventsapi.Events_SubscribeClient, want int, max time.Duration) map[string]int {
	t.Helper()
	got := make(chan string)
	go func() {
		for {
			env, err := evs.Recv()
			if err != nil {
				close(got)
				return
			}
			var ex eventtypes.TaskExit
			if env.Event.UnmarshalTo(&ex) == nil {
				got <- ex.ID
			}
		}
	}()
	exits := map[string]int{}
	n := 0
	end := time.After(max)
	var quiet <-chan time.Time
	for {
		select {
		case id, ok := <-got:
			if !ok {
				return exits
			}
			exits[id]++
			if n++; n == want {
				quiet = time.After(300 * time.Millisecond)
			}
		case <-end:
			return exits
		case <-quiet:
			return exits
		}
	}
}

// runcSlowCreate is a runc whose create holds until a file is removed, then
// fails, so that a test can act while a task is being created (and the
// wrapper, which outlives a killed shim, never creates anything).
const runcSlowCreate = `#!/bin/sh
for a; do
  if [ "$a" = create ]; then
    touch "$0.creating"
    while [ -e "$0.hold" ]; do sleep 0.05; done
    exit 1
  fi
done
exec runc "$@"
`

// TestTasksShimKilledDuringCreate: the shim dies while `runc create` runs.
// The Create fails with an error, and nothing of the task is left: no
// bundle, no mount, no runc container, no process; the same id can then be
// created and run.
func TestTasksShimKilledDuringCreate(t *testing.T) {
	e := newTaskEnv(t, "containerd-shim-berth-v2")
	slow := filepath.Join(t.TempDir(), "runc-slow")
	if err := os.WriteFile(slow, []byte(runcSlowCreate), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(slow+".hold", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(slow + ".hold") })
	opts, err := anypb.New(&runcoptions.Options{BinaryName: slow})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.newContainer(e.ctx(), "cut", oci.Options{Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	created := make(chan error, 1)
	go func() {
		_, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "cut", Options: opts})
		created <- err
	}()
	bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.ns, "cut")
	deadline := time.Now().Add(20 * time.Second)
	for !fileExists(slow + ".creating") {
		if time.Now().After(deadline) {
			t.Fatal("runc create was not reached")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(shimPidOf(t, bundle), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-created:
		if !errdefs.IsUnavailable(native(err)) || !strings.Contains(err.Error(), "shim exited") {
			t.Fatalf("Create whose shim was killed: %v, want Unavailable saying the shim exited", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Create did not return after its shim was killed")
	}
	deadline = time.Now().Add(10 * time.Second)
	for dirExists(bundle) {
		if time.Now().After(deadline) {
			t.Fatal("bundle left after the failed Create")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := mountsUnder(bundle); len(m) > 0 {
		t.Errorf("the rootfs is still mounted: %v", m)
	}
	if out, _ := exec.Command("runc", "--root", filepath.Join(e.d.State, "runc", e.ns), "list", "-q").Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("runc containers left: %s", out)
	}
	// the same id again, with the real runc
	if _, err := e.ts.Create(e.ctx(), &tasks.CreateTaskRequest{ContainerID: "cut"}); err != nil {
		t.Fatalf("create again: %v", err)
	}
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "cut"}); err != nil {
		t.Fatalf("start again: %v", err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
