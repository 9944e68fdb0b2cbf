package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/mount"
	"github.com/containerd/console"
	"github.com/containerd/containerd/api/events"
	task "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type procState int

const (
	stateCreated procState = iota
	stateRunning
	statePaused
	stateStopped
	stateDeleted
)

// process is a container's init or one of its execs.
type process struct {
	c        *container
	id       string // the exec id, or the container id for init
	init     bool
	pid      int
	state    procState
	starting bool  // Start is in flight
	held     *exit // exit reaped while starting, replayed after it
	status   int
	exitedAt time.Time
	done     chan struct{} // closed at exit
	stdio    stdio
	io       *processIO
	spec     *specs.Process // execs
	pidfd    *os.File       // init: signals go through it, never to a reused pid
}

type container struct {
	id, bundle   string
	runc         *runc.Runc
	opts         bundleOptions
	init         *process
	execs        map[string]*process
	ready        bool // runc create succeeded
	deleting     bool
	mounted      bool
	killAllOnEnd bool // no pid namespace of its own: kill the rest when init exits
	poststop     bool // the spec has poststop hooks
	cg           *cgroup
	oom          *oomWatch
	initExit     *exit // init's exit, held until the running execs have exited
}

func (c *container) runningExecs() int {
	n := 0
	for _, p := range c.execs {
		if p.pid != 0 && (p.state == stateRunning || p.state == statePaused) {
			n++
		}
	}
	return n
}

// service is the task API of one shim.
type service struct {
	ctx    context.Context
	ns     string
	pub    eventPublisher
	reaper *reaper

	mu         sync.Mutex
	containers map[string]*container
	byPid      map[int]*process
	starting   int    // creates and exec starts whose pid is not known yet
	held       []exit // exits of unknown pids seen while starting > 0
	closing    bool
	shutdown   func()
	background sync.WaitGroup // runc deletes after Delete answered
}

// eventPublisher queues task events for the daemon without blocking.
type eventPublisher interface {
	publish(ctx context.Context, topic string, ev proto.Message)
}

func newService(ctx context.Context, ns string, pub eventPublisher, shutdown func()) *service {
	return &service{
		ctx: ctx, ns: ns, pub: pub, shutdown: shutdown,
		containers: make(map[string]*container),
		byPid:      make(map[int]*process),
	}
}

// handleExit is the reaper's callback for every exit that is not one of
// its own commands.
func (s *service) handleExit(e exit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.byPid[e.pid]
	if !ok {
		if s.starting > 0 {
			s.held = append(s.held, e)
		}
		return
	}
	delete(s.byPid, e.pid)
	if p.starting {
		p.held = &e
		return
	}
	s.exitedLocked(p, e)
}

// replayHeldLocked hands held exits to processes whose pid became known.
func (s *service) replayHeldLocked() {
	kept := s.held[:0]
	for _, e := range s.held {
		p, ok := s.byPid[e.pid]
		switch {
		case ok && p.starting:
			delete(s.byPid, e.pid)
			ee := e
			p.held = &ee
		case ok:
			delete(s.byPid, e.pid)
			s.exitedLocked(p, e)
		case s.starting > 0:
			kept = append(kept, e)
		}
	}
	s.held = kept
	if len(s.held) == 0 {
		s.held = nil
	}
}

func (s *service) exitedLocked(p *process, e exit) {
	if p.state >= stateStopped {
		return
	}
	c := p.c
	if p.init && c.runningExecs() > 0 {
		c.initExit = &e
		if c.killAllOnEnd {
			go s.killAll(c)
		}
		return
	}
	s.markExitedLocked(p, e)
	if p.init && c.killAllOnEnd {
		go s.killAll(c)
	}
	if !p.init && c.initExit != nil && c.runningExecs() == 0 {
		ie := *c.initExit
		c.initExit = nil
		s.markExitedLocked(c.init, ie)
	}
}

func (s *service) markExitedLocked(p *process, e exit) {
	p.state, p.status, p.exitedAt = stateStopped, e.status, e.at
	close(p.done)
	if p.init {
		writeInitExit(p.c.bundle, e.status, e.at)
	}
	s.pub.publish(s.ctx, "/tasks/exit", &events.TaskExit{
		ContainerID: p.c.id, ID: p.id, Pid: uint32(p.pid),
		ExitStatus: uint32(e.status), ExitedAt: timestamppb.New(e.at),
	})
}

func (s *service) killAll(c *container) {
	if err := c.runc.Kill(s.ctx, c.id, int(unix.SIGKILL), &runc.KillOpts{All: true}); err != nil {
		log.G(s.ctx).WithError(err).WithField("id", c.id).Debug("kill remaining processes after init exit")
	}
}

// lookupLocked finds a process; execID "" means init.
func (s *service) lookupLocked(id, execID string) (*container, *process, error) {
	c, ok := s.containers[id]
	if !ok || !c.ready {
		return nil, nil, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %q of task %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

func (s *service) lookup(id, execID string) (*container, *process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookupLocked(id, execID)
}

// Create mounts the rootfs and runs `runc create`.
func (s *service) Create(ctx context.Context, r *task.CreateTaskRequest) (_ *task.CreateTaskResponse, retErr error) {
	if err := identifiers.Validate(r.ID); err != nil {
		return nil, err
	}
	if r.Checkpoint != "" {
		return nil, fmt.Errorf("create %q from checkpoint %s: restore: %w", r.ID, r.Checkpoint, errdefs.ErrNotImplemented)
	}
	if !filepath.IsAbs(r.Bundle) {
		return nil, fmt.Errorf("bundle %q of task %q is not absolute: %w", r.Bundle, r.ID, errdefs.ErrInvalidArgument)
	}
	ro, err := parseOptions(r.Options)
	if err != nil {
		return nil, err
	}
	opts := toBundleOptions(ro)
	c := &container{id: r.ID, bundle: r.Bundle, opts: opts, execs: make(map[string]*process)}
	p := &process{c: c, id: r.ID, init: true, done: make(chan struct{}),
		stdio: stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}}
	c.init = p

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, fmt.Errorf("create %q: %w: %w", r.ID, errShimClosed, errdefs.ErrUnavailable)
	}
	if _, ok := s.containers[r.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("task %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	s.containers[r.ID] = c
	s.starting++
	s.mu.Unlock()

	var pio *processIO
	defer func() {
		if retErr == nil {
			return
		}
		if pio != nil {
			pio.close()
		}
		if c.mounted {
			_ = mount.UnmountAll(filepath.Join(c.bundle, "rootfs"), 0)
		}
		s.mu.Lock()
		delete(s.containers, r.ID)
		s.starting--
		s.replayHeldLocked()
		s.mu.Unlock()
	}()

	if err := writeBundleOptions(r.Bundle, opts); err != nil {
		return nil, err
	}
	c.runc = newRunc(opts, s.ns, r.Bundle)
	traits := readSpecTraits(r.Bundle)
	c.killAllOnEnd, c.poststop = traits.sharesPid, traits.poststop
	if len(r.Rootfs) > 0 {
		rootfs := filepath.Join(r.Bundle, "rootfs")
		if err := os.Mkdir(rootfs, 0o711); err != nil && !os.IsExist(err) {
			return nil, err
		}
		if err := mount.All(mount.FromProto(r.Rootfs), rootfs); err != nil {
			return nil, err
		}
		c.mounted = true
	}
	if pio, err = newProcessIO(s.ctx, s.reaper, r.ID, s.ns, p.stdio, int(opts.IoUID), int(opts.IoGID)); err != nil {
		return nil, err
	}
	var sock *runc.Socket
	if r.Terminal {
		if sock, err = runc.NewTempConsoleSocket(); err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		defer sock.Close()
	}
	copts := &runc.CreateOpts{
		PidFile: filepath.Join(r.Bundle, initPidFile), IO: pio.runcIO(),
		NoPivot: opts.NoPivotRoot, NoNewKeyring: opts.NoNewKeyring,
	}
	if sock != nil {
		copts.ConsoleSocket = sock
	}
	if err := c.runc.Create(ctx, r.ID, r.Bundle, copts); err != nil {
		_ = c.runc.Delete(context.Background(), r.ID, &runc.DeleteOpts{Force: true})
		return nil, runtimeError(r.Bundle, err, "OCI runtime create failed")
	}
	var con console.Console
	if sock != nil {
		if con, err = sock.ReceiveMaster(); err != nil {
			_ = c.runc.Delete(context.Background(), r.ID, &runc.DeleteOpts{Force: true})
			return nil, fmt.Errorf("receive pty master: %w", err)
		}
	}
	if err := pio.start(con); err != nil {
		_ = c.runc.Delete(context.Background(), r.ID, &runc.DeleteOpts{Force: true})
		return nil, err
	}
	pid, err := readPidFile(filepath.Join(r.Bundle, initPidFile))
	if err != nil {
		_ = c.runc.Delete(context.Background(), r.ID, &runc.DeleteOpts{Force: true})
		return nil, err
	}
	cg, err := loadCgroup(pid)
	if err != nil {
		log.G(ctx).WithError(err).Warn("find the cgroup of the task: no stats or oom events")
	}

	var pidfd *os.File
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		pidfd = os.NewFile(uintptr(fd), "pidfd")
	}

	s.mu.Lock()
	p.pid, p.io, c.cg, c.ready, p.pidfd = pid, pio, cg, true, pidfd
	s.byPid[pid] = p
	s.starting--
	s.pub.publish(s.ctx, "/tasks/create", &events.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO:         &events.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint: r.Checkpoint, Pid: uint32(pid),
	})
	s.replayHeldLocked()
	s.mu.Unlock()

	if cg != nil {
		w, err := cg.watchOOM(s.ctx, func() {
			s.pub.publish(s.ctx, "/tasks/oom", &events.TaskOOM{ContainerID: r.ID})
		})
		if err != nil {
			log.G(ctx).WithError(err).Debug("oom events unavailable")
		}
		s.mu.Lock()
		c.oom = w
		s.mu.Unlock()
	}
	return &task.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// specTraits are what the shim needs to know of a bundle's spec.
type specTraits struct {
	sharesPid bool // no pid namespace of its own: its processes outlive init
	poststop  bool // it has poststop hooks, which runc delete runs
}

func readSpecTraits(bundle string) specTraits {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return specTraits{}
	}
	var spec struct {
		Hooks *struct {
			Poststop []json.RawMessage `json:"poststop"`
		} `json:"hooks"`
		Linux *struct {
			Namespaces []specs.LinuxNamespace `json:"namespaces"`
		} `json:"linux"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return specTraits{}
	}
	t := specTraits{poststop: spec.Hooks != nil && len(spec.Hooks.Poststop) > 0}
	if spec.Linux == nil {
		return t
	}
	t.sharesPid = true
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace && ns.Path == "" {
			t.sharesPid = false
		}
	}
	return t
}

// Start starts init (`runc start`) or an exec (`runc exec --detach`).
func (s *service) Start(ctx context.Context, r *task.StartRequest) (*task.StartResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookupLocked(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.state != stateCreated || p.starting {
		s.mu.Unlock()
		return nil, fmt.Errorf("process %q of task %q is not in the created state: %w", p.id, c.id, errdefs.ErrFailedPrecondition)
	}
	p.starting = true
	if !p.init {
		s.starting++
	}
	s.mu.Unlock()

	if p.init {
		err := c.runc.Start(ctx, c.id)
		s.initStarted(p, err)
		if err != nil {
			return nil, runtimeError(c.bundle, err, "OCI runtime start failed")
		}
		return &task.StartResponse{Pid: uint32(p.pid)}, nil
	}
	pio, pid, err := s.startExec(ctx, c, p)
	s.execStarted(p, pio, pid, err)
	if err != nil {
		return nil, err
	}
	return &task.StartResponse{Pid: uint32(pid)}, nil
}

// initStarted ends the start of init: TaskStart (on success), then the
// exit that may have been reaped meanwhile.
func (s *service) initStarted(p *process, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.starting = false
	if err == nil {
		p.state = stateRunning
		s.pub.publish(s.ctx, "/tasks/start", &events.TaskStart{ContainerID: p.c.id, Pid: uint32(p.pid)})
	}
	if p.held != nil {
		e := *p.held
		p.held = nil
		s.exitedLocked(p, e)
	}
}

// execStarted ends the start of an exec: its pid becomes known, then
// TaskExecStarted, then an exit of that pid reaped meanwhile.
func (s *service) execStarted(p *process, pio *processIO, pid int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starting--
	p.starting = false
	if err != nil {
		p.state, p.status, p.exitedAt = stateStopped, 255, time.Now()
		close(p.done)
		s.replayHeldLocked()
		return
	}
	p.pid, p.io, p.state = pid, pio, stateRunning
	s.byPid[pid] = p
	s.pub.publish(s.ctx, "/tasks/exec-started", &events.TaskExecStarted{ContainerID: p.c.id, ExecID: p.id, Pid: uint32(pid)})
	s.replayHeldLocked()
}

func (s *service) startExec(ctx context.Context, c *container, p *process) (*processIO, int, error) {
	pio, err := newProcessIO(s.ctx, s.reaper, p.id, s.ns, p.stdio, int(c.opts.IoUID), int(c.opts.IoGID))
	if err != nil {
		return nil, 0, err
	}
	fail := func(err error) (*processIO, int, error) {
		pio.close()
		return nil, 0, err
	}
	var sock *runc.Socket
	if p.stdio.terminal {
		if sock, err = runc.NewTempConsoleSocket(); err != nil {
			return fail(fmt.Errorf("console socket: %w", err))
		}
		defer sock.Close()
	}
	pidFile := filepath.Join(c.bundle, p.id+".pid")
	eopts := &runc.ExecOpts{PidFile: pidFile, Detach: true, IO: pio.runcIO()}
	if sock != nil {
		eopts.ConsoleSocket = sock
	}
	if err := c.runc.Exec(ctx, c.id, *p.spec, eopts); err != nil {
		return fail(runtimeError(c.bundle, err, "OCI runtime exec failed"))
	}
	var con console.Console
	if sock != nil {
		if con, err = sock.ReceiveMaster(); err != nil {
			return fail(fmt.Errorf("receive pty master: %w", err))
		}
	}
	if err := pio.start(con); err != nil {
		return fail(err)
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		return fail(err)
	}
	return pio, pid, nil
}

// Delete removes a stopped (or never started) process; for init, the
// container: runc delete, rootfs unmount, TaskDelete.
func (s *service) Delete(ctx context.Context, r *task.DeleteRequest) (*task.DeleteResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookupLocked(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	switch {
	case p.starting:
		s.mu.Unlock()
		return nil, fmt.Errorf("process %q of task %q is starting: %w", p.id, c.id, errdefs.ErrFailedPrecondition)
	case p.state == stateRunning || p.state == statePaused:
		s.mu.Unlock()
		return nil, fmt.Errorf("process %q of task %q is running: cannot delete: %w", p.id, c.id, errdefs.ErrFailedPrecondition)
	case p.init && c.deleting:
		s.mu.Unlock()
		return nil, fmt.Errorf("task %q is being deleted: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if !p.init {
		delete(c.execs, p.id)
		p.state = stateDeleted
		s.mu.Unlock()
		if p.io != nil {
			p.io.wait(2 * time.Second)
			p.io.close()
		}
		os.Remove(filepath.Join(c.bundle, p.id+".pid"))
		return &task.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt)}, nil
	}
	c.deleting = true
	created := p.state == stateCreated
	// Once init has exited in a pid namespace of its own, nothing of the
	// container runs: the rootfs can go first, and runc's removal of its
	// state and cgroups, which takes a process start, after the answer
	// (Shutdown waits for it). Poststop hooks might look at the rootfs, so
	// with those the order stays runc delete, then unmount.
	later := !created && !c.killAllOnEnd && !c.poststop && !s.closing
	if later {
		s.background.Add(1) // under s.mu: Shutdown sets closing before it waits
	}
	s.mu.Unlock()

	if created {
		// never started: runc delete --force kills init; its exit is reported as usual.
		if err := c.runc.Delete(ctx, c.id, &runc.DeleteOpts{Force: true}); err != nil {
			log.G(ctx).WithError(err).Warn("runc delete --force of a created task")
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	if later {
		defer func() {
			go func() {
				defer s.background.Done()
				ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
				defer cancel()
				s.runcDelete(ctx, c)
			}()
		}()
	} else {
		s.runcDelete(ctx, c)
	}
	s.mu.Lock()
	oom := c.oom
	execs := make([]*process, 0, len(c.execs))
	for _, e := range c.execs {
		execs = append(execs, e)
	}
	s.mu.Unlock()
	oom.stop()
	if p.io != nil {
		p.io.wait(5 * time.Second)
		p.io.close()
	}
	for _, e := range execs {
		if e.io != nil {
			e.io.close()
		}
	}
	if c.mounted {
		if err := mount.UnmountAll(filepath.Join(c.bundle, "rootfs"), 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmount rootfs")
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state == stateCreated {
		// init never exited visibly (runc delete failed to kill it)
		p.state, p.status, p.exitedAt = stateStopped, 128+int(unix.SIGKILL), time.Now()
		close(p.done)
	}
	p.state = stateDeleted
	if s.byPid[p.pid] == p {
		delete(s.byPid, p.pid)
	}
	delete(s.containers, c.id)
	if p.pidfd != nil {
		p.pidfd.Close()
		p.pidfd = nil
	}
	s.pub.publish(s.ctx, "/tasks/delete", &events.TaskDelete{
		ContainerID: c.id, Pid: uint32(p.pid), ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt),
	})
	return &task.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt)}, nil
}

// runcDelete removes the container's runtime state and cgroups.
func (s *service) runcDelete(ctx context.Context, c *container) {
	if err := c.runc.Delete(ctx, c.id, &runc.DeleteOpts{Force: true}); err != nil && !strings.Contains(err.Error(), "not exist") {
		log.G(ctx).WithError(runtimeError(c.bundle, err, "runc delete")).Warn("delete task")
	}
}

// Exec registers an exec process; Start runs it.
func (s *service) Exec(ctx context.Context, r *task.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := identifiers.Validate(r.ExecID); err != nil {
		return nil, err
	}
	if r.Spec == nil {
		return nil, fmt.Errorf("exec %q: no process spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.Value, &spec); err != nil {
		return nil, fmt.Errorf("exec %q: process spec: %v: %w", r.ExecID, err, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, err := s.lookupLocked(r.ID, "")
	if err != nil {
		return nil, err
	}
	if c.init.state >= stateStopped || c.deleting {
		return nil, fmt.Errorf("task %q is stopped: cannot exec: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, fmt.Errorf("exec %q of task %q: %w", r.ExecID, c.id, errdefs.ErrAlreadyExists)
	}
	c.execs[r.ExecID] = &process{c: c, id: r.ExecID, done: make(chan struct{}), spec: &spec,
		stdio: stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}}
	s.pub.publish(s.ctx, "/tasks/exec-added", &events.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

func toStatus(st procState) tasktypes.Status {
	switch st {
	case stateCreated:
		return tasktypes.Status_CREATED
	case stateRunning:
		return tasktypes.Status_RUNNING
	case statePaused:
		return tasktypes.Status_PAUSED
	case stateStopped:
		return tasktypes.Status_STOPPED
	}
	return tasktypes.Status_UNKNOWN
}

func (s *service) State(ctx context.Context, r *task.StateRequest) (*task.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookupLocked(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	return &task.StateResponse{
		ID: p.id, Bundle: c.bundle, Pid: uint32(p.pid), Status: toStatus(p.state),
		Stdin: p.stdio.stdin, Stdout: p.stdio.stdout, Stderr: p.stdio.stderr, Terminal: p.stdio.terminal,
		ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt),
	}, nil
}

func (s *service) Wait(ctx context.Context, r *task.WaitRequest) (*task.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &task.WaitResponse{ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt)}, nil
}

func (s *service) Kill(ctx context.Context, r *task.KillRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	c, p, err := s.lookupLocked(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.state >= stateStopped {
		s.mu.Unlock()
		return nil, fmt.Errorf("process %q of task %q: process already finished: %w", p.id, c.id, errdefs.ErrNotFound)
	}
	if !p.init {
		defer s.mu.Unlock()
		if p.pid == 0 {
			return nil, fmt.Errorf("exec %q of task %q is not started: %w", p.id, c.id, errdefs.ErrFailedPrecondition)
		}
		if err := unix.Kill(p.pid, unix.Signal(r.Signal)); err != nil {
			return nil, checkKillError(err)
		}
		return &emptypb.Empty{}, nil
	}
	if !r.All && p.pidfd != nil && p.state != statePaused {
		// what runc kill does for one process, without its exec: signal
		// init (a paused one goes through runc, which thaws it for SIGKILL).
		defer s.mu.Unlock()
		if err := unix.PidfdSendSignal(int(p.pidfd.Fd()), unix.Signal(r.Signal), nil, 0); err != nil {
			return nil, checkKillError(err)
		}
		return &emptypb.Empty{}, nil
	}
	s.mu.Unlock()
	if err := c.runc.Kill(ctx, c.id, int(r.Signal), &runc.KillOpts{All: r.All}); err != nil {
		return nil, checkKillError(runtimeError(c.bundle, err, "runc kill"))
	}
	return &emptypb.Empty{}, nil
}

func (s *service) Pids(ctx context.Context, r *task.PidsRequest) (*task.PidsResponse, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, err
	}
	pids, err := c.runc.Ps(ctx, c.id)
	if err != nil {
		return nil, runtimeError(c.bundle, err, "runc ps")
	}
	execs := make(map[int]string)
	s.mu.Lock()
	for _, p := range c.execs {
		if p.pid != 0 {
			execs[p.pid] = p.id
		}
	}
	s.mu.Unlock()
	resp := &task.PidsResponse{}
	for _, pid := range pids {
		pi := &tasktypes.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execs[pid]; ok {
			b, err := proto.Marshal(&options.ProcessDetails{ExecID: id})
			if err == nil {
				pi.Info = &anypb.Any{TypeUrl: string(proto.MessageName(&options.ProcessDetails{})), Value: b}
			}
		}
		resp.Processes = append(resp.Processes, pi)
	}
	return resp, nil
}

func (s *service) Pause(ctx context.Context, r *task.PauseRequest) (*emptypb.Empty, error) {
	return s.freeze(ctx, r.ID, true)
}

func (s *service) Resume(ctx context.Context, r *task.ResumeRequest) (*emptypb.Empty, error) {
	return s.freeze(ctx, r.ID, false)
}

func (s *service) freeze(ctx context.Context, id string, pause bool) (*emptypb.Empty, error) {
	s.mu.Lock()
	c, p, err := s.lookupLocked(id, "")
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	want, verb := stateRunning, "pause"
	if !pause {
		want, verb = statePaused, "resume"
	}
	if p.state != want {
		s.mu.Unlock()
		return nil, fmt.Errorf("cannot %s task %q in state %s: %w", verb, id, toStatus(p.state), errdefs.ErrFailedPrecondition)
	}
	s.mu.Unlock()
	if pause {
		err = c.runc.Pause(ctx, id)
	} else {
		err = c.runc.Resume(ctx, id)
	}
	if err != nil {
		return nil, runtimeError(c.bundle, err, "runc "+verb)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.state != want {
		return &emptypb.Empty{}, nil // exited meanwhile
	}
	if pause {
		p.state = statePaused
		s.pub.publish(s.ctx, "/tasks/paused", &events.TaskPaused{ContainerID: id})
	} else {
		p.state = stateRunning
		s.pub.publish(s.ctx, "/tasks/resumed", &events.TaskResumed{ContainerID: id})
	}
	return &emptypb.Empty{}, nil
}

func (s *service) Checkpoint(ctx context.Context, r *task.CheckpointTaskRequest) (*emptypb.Empty, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("criu"); err != nil {
		return nil, fmt.Errorf("checkpoint task %q: criu is not installed: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	var o options.CheckpointOptions
	if r.Options != nil && len(r.Options.Value) > 0 {
		if err := proto.Unmarshal(r.Options.Value, &o); err != nil {
			return nil, fmt.Errorf("checkpoint options: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	image := r.Path
	if image == "" {
		image = o.ImagePath
	}
	if image == "" {
		return nil, fmt.Errorf("checkpoint task %q: no image path: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	work := o.WorkPath
	if work == "" {
		// containerd's place: the persistent work dir the daemon links
		// into the bundle, else the bundle.
		work = filepath.Join(c.bundle, "work", "criu-work")
		if _, err := os.Stat(filepath.Join(c.bundle, "work")); err != nil {
			work = filepath.Join(c.bundle, "criu-work")
		}
		defer os.RemoveAll(work)
	}
	var actions []runc.CheckpointAction
	if !o.Exit {
		actions = append(actions, runc.LeaveRunning)
	}
	err = c.runc.Checkpoint(ctx, c.id, &runc.CheckpointOpts{
		ImagePath: image, WorkDir: work, ParentPath: o.ParentPath,
		AllowOpenTCP: o.OpenTcp, AllowExternalUnixSockets: o.ExternalUnixSockets, AllowTerminal: o.Terminal,
		FileLocks: o.FileLocks, EmptyNamespaces: o.EmptyNamespaces, Cgroups: runc.CgroupMode(o.CgroupsMode),
	}, actions...)
	if err != nil {
		return nil, runtimeError(c.bundle, err, "runc checkpoint")
	}
	return &emptypb.Empty{}, nil
}

func (s *service) ResizePty(ctx context.Context, r *task.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if pio := p.processIO(s); pio != nil {
		if err := pio.resize(r.Width, r.Height); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

func (s *service) CloseIO(ctx context.Context, r *task.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if pio := p.processIO(s); pio != nil && r.Stdin {
		pio.closeStdin()
	}
	return &emptypb.Empty{}, nil
}

func (p *process) processIO(s *service) *processIO {
	s.mu.Lock()
	defer s.mu.Unlock()
	return p.io
}

func (s *service) Update(ctx context.Context, r *task.UpdateTaskRequest) (*emptypb.Empty, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, fmt.Errorf("update task %q: no resources: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
		return nil, fmt.Errorf("update task %q: resources: %v: %w", r.ID, err, errdefs.ErrInvalidArgument)
	}
	if err := c.runc.Update(ctx, c.id, &res); err != nil {
		return nil, runtimeError(c.bundle, err, "runc update")
	}
	return &emptypb.Empty{}, nil
}

func (s *service) Stats(ctx context.Context, r *task.StatsRequest) (*task.StatsResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookupLocked(r.ID, "")
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	cg, pid := c.cg, p.pid
	s.mu.Unlock()
	if cg == nil {
		if cg, err = loadCgroup(pid); err != nil {
			return nil, fmt.Errorf("cgroup of task %q: %v: %w", r.ID, err, errdefs.ErrNotFound)
		}
	}
	a, err := cg.metrics()
	if err != nil {
		return nil, err
	}
	return &task.StatsResponse{Stats: a}, nil
}

func (s *service) Connect(ctx context.Context, r *task.ConnectRequest) (*task.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &task.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, ok := s.containers[r.ID]; ok && c.ready {
		resp.TaskPid = uint32(c.init.pid)
	}
	return resp, nil
}

// Shutdown ends the shim once it serves no task; with tasks it is a no-op.
func (s *service) Shutdown(ctx context.Context, r *task.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	if len(s.containers) > 0 {
		s.mu.Unlock()
		return &emptypb.Empty{}, nil
	}
	s.closing = true
	s.mu.Unlock()
	s.background.Wait()
	s.shutdown()
	return &emptypb.Empty{}, nil
}
