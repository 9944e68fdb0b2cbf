package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/mount"
	containers "github.com/containerd/containerd/api/services/containers/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
)

// What a run leaves on the machine, and how the benchmark takes it away
// again: containers (and their shims, which outlive their daemon), mounts
// below the temporary directories, and the cgroups runc makes.

// shimPids are the shims serving the daemon at address: the processes whose
// command line has "-address ADDRESS", as both daemons start their shims.
func shimPids(address string) []int {
	var pids []int
	for _, pid := range allPids() {
		args := cmdline(pid)
		for i := 0; i+1 < len(args); i++ {
			if (args[i] == "-address" || args[i] == "--address") && args[i+1] == address {
				if strings.Contains(filepath.Base(args[0]), "shim") {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

// taskShims splits shim pids into those serving tasks and those launched
// ahead of need that wait for one (berthd keeps one of its own shim
// waiting): a task's shim runs in its bundle, <runtime state>/<ns>/<id>; a
// waiting one in <runtime state> itself.
func taskShims(pids []int) (serving, waiting []int) {
	for _, pid := range pids {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err == nil && filepath.Base(cwd) == "io.containerd.runtime.v2.task" {
			waiting = append(waiting, pid)
		} else {
			serving = append(serving, pid)
		}
	}
	return serving, waiting
}

func allPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ppid is the parent of pid, or 0.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// killShims waits up to grace for the daemon's shims to exit, then kills
// those left and everything below them (the containers they reaped for). It
// returns how many shims it had to kill.
func killShims(address string, grace time.Duration) int {
	deadline := time.Now().Add(grace)
	pids := shimPids(address)
	for len(pids) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		pids = shimPids(address)
	}
	if len(pids) == 0 {
		return 0
	}
	// children first: a container's init is the shim's child.
	parents := map[int]int{}
	for _, pid := range allPids() {
		parents[pid] = ppid(pid)
	}
	under := func(pid, root int) bool {
		for n := 0; pid > 1 && n < 64; n++ {
			if pid = parents[pid]; pid == root {
				return true
			}
		}
		return false
	}
	for _, shim := range pids {
		for pid := range parents {
			if under(pid, shim) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = syscall.Kill(shim, syscall.SIGKILL)
	}
	return len(pids)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := mount.UnescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unmountUnder detaches every mount at or below dir and returns how many
// there were.
func unmountUnder(dir string) (int, error) {
	mps := mountsUnder(dir)
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return len(mps), errors.Join(errs...)
}

// removeAllTasks is the clean-up of a run that stopped part way: it kills
// and deletes every task of the bench namespace, then deletes the
// containers and their snapshots, through the API. A finished run leaves
// nothing for it to do.
func removeAllTasks(d *daemon) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = nsContext(ctx)
	tc := tasksapi.NewTasksClient(d.conn(0))
	cc := containers.NewContainersClient(d.conn(0))
	sc := snapshotsapi.NewSnapshotsClient(d.conn(0))
	var errs []error
	tl, err := tc.List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return 0, fmt.Errorf("%s: list tasks: %w", d.name, err)
	}
	for _, t := range tl.GetTasks() {
		id := t.GetID()
		_, _ = tc.Kill(ctx, &tasksapi.KillRequest{ContainerID: id, Signal: uint32(syscall.SIGKILL), All: true})
		for range 100 {
			r, err := tc.Get(ctx, &tasksapi.GetRequest{ContainerID: id})
			if err != nil || r.GetProcess().GetStatus() == task.Status_STOPPED {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := tc.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id}); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete task %s: %w", d.name, id, err))
		}
	}
	cl, err := cc.List(ctx, &containers.ListContainersRequest{})
	if err != nil {
		return len(tl.GetTasks()), errors.Join(append(errs, fmt.Errorf("%s: list containers: %w", d.name, err))...)
	}
	for _, c := range cl.GetContainers() {
		if _, err := cc.Delete(ctx, &containers.DeleteContainerRequest{ID: c.GetID()}); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete container %s: %w", d.name, c.GetID(), err))
		}
		if c.GetSnapshotKey() != "" {
			_, _ = sc.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: c.GetSnapshotter(), Key: c.GetSnapshotKey()})
		}
	}
	return len(tl.GetTasks()), errors.Join(errs...)
}

// cgroupRoots are the cgroup v1 hierarchies, or the v2 root, under which
// runc makes /bench/ID for the benchmark's containers.
func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var roots []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			roots = append(roots, p)
		}
	}
	return roots
}

// cgroupParents are the /bench cgroups (the namespace's parent cgroup) that
// exist now.
func cgroupParents() map[string]bool {
	m := map[string]bool{}
	for _, r := range cgroupRoots() {
		if _, err := os.Stat(filepath.Join(r, namespace)); err == nil {
			m[filepath.Join(r, namespace)] = true
		}
	}
	return m
}

// removeCgroups removes the cgroups of this run's containers (named with
// tag) that a kill left behind, then the /bench parents that did not exist
// before the run, if empty. Cgroups still in use stay: rmdir refuses them.
func removeCgroups(tag string, before map[string]bool) {
	for _, r := range cgroupRoots() {
		parent := filepath.Join(r, namespace)
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), tag) {
				_ = syscall.Rmdir(filepath.Join(parent, e.Name()))
			}
		}
		if !before[parent] {
			_ = syscall.Rmdir(parent)
		}
	}
}
