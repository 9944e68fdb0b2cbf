package shim

import (
	"os/exec"
	"runtime"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// exit is one reaped child.
type exit struct {
	pid    int
	status int
	at     time.Time
}

// reaper is the server's only wait4 caller. Commands started through it
// (runc, logging binaries) get their exit on a channel; every other exit
// (container processes, reparented to this subreaper) goes to onExit, in
// the order reaped, from the single reap goroutine.
//
// It is go-runc's ProcessMonitor: Start holds mu from before the fork until
// the pid is registered, and the reap loop takes mu before routing, so an
// exit reaped in between still finds its command.
type reaper struct {
	mu     sync.Mutex
	cmds   map[int]chan runc.Exit
	onExit func(exit)
}

func newReaper(onExit func(exit)) *reaper {
	return &reaper{cmds: make(map[int]chan runc.Exit), onExit: onExit}
}

// Start starts c and registers it for its exit.
func (r *reaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	ec := make(chan runc.Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := c.Start(); err != nil {
		return nil, err
	}
	r.cmds[c.Process.Pid] = ec
	return ec, nil
}

// StartLocked starts c from a goroutine locked to its OS thread, which it
// keeps until c exits: c may have a parent-death signal, which the kernel
// sends when the forking thread, not the process, goes away.
func (r *reaper) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	started := make(chan error, 1)
	ec := make(chan runc.Exit, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		inner, err := r.Start(c)
		started <- err
		if err != nil {
			return
		}
		ec <- <-inner
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return ec, nil
}

// Wait waits for the exit of a command from Start and lets exec.Cmd finish
// its copying goroutines (its own wait fails: the child is reaped). That
// failed wait leaves the process's pidfd open until a collection would run
// its cleanup; Release closes it now, or each runc call would hold an fd.
func (r *reaper) Wait(c *exec.Cmd, ec chan runc.Exit) (int, error) {
	e := <-ec
	_ = c.Wait()
	_ = c.Process.Release()
	return e.Status, nil
}

// reap collects every exited child. It runs on each SIGCHLD.
func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue
		}
		e := exit{pid: pid, status: exitStatus(ws), at: time.Now()}
		r.mu.Lock()
		ch, ok := r.cmds[pid]
		delete(r.cmds, pid)
		r.mu.Unlock()
		if ok {
			ch <- runc.Exit{Pid: pid, Status: e.status, Timestamp: e.at}
			continue
		}
		r.onExit(e)
	}
}

// exitStatus is the shell's view of a wait status: the exit code, or 128
// plus the signal.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
