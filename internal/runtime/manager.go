// Package runtime is the daemon side of tasks: runtime v2 shims, the way
// containerd runs them.
//
// For each task it makes a bundle, <state>/<ns>/<id>, holding config.json
// (the container's spec, verbatim), rootfs/ (the shim mounts the request's
// rootfs there), work (a link to <root>/<ns>/<id>, kept across reboots), log
// (a FIFO the shim writes its log to), shim-binary-path and address. It
// starts a shim with `start` as containerd does, except berth's own, which
// it launches itself and keeps one of waiting (launch.go); it talks to the
// shim over ttrpc (containerd.task.v2.Task), and on start-up reconnects to
// every shim whose bundle is still there. A task's Delete is answered
// before its shim has shut down and its bundle is gone; a Create under the
// same id waits for both.
//
// Invariants:
//   - namespaces and IDs are validated before any path is built from them;
//   - a task is in the manager's table iff its bundle exists and its shim was
//     reached; a shim that goes away without Delete is cleaned up: its
//     `delete` runs, /tasks/exit (status 255 when none is known) and
//     /tasks/delete are published, and the bundle is removed;
//   - shim addresses are unix socket paths, never abstract sockets.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/namespaces"
	eventtypes "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is the runtime plugin's section.
type Config struct {
	// Shims maps runtime names to shim binaries (name on PATH or path).
	// By default io.containerd.runc.v2 is served by berth's own shim.
	Shims map[string]string `toml:"shims"`
}

// DefaultConfig serves io.containerd.runc.v2 with containerd-shim-berth-v2.
func DefaultConfig() *Config {
	return &Config{Shims: map[string]string{"io.containerd.runc.v2": "containerd-shim-berth-v2"}}
}

// shimDeleteTimeout bounds a shim's `delete` after it died.
const shimDeleteTimeout = 10 * time.Second

// Manager runs tasks through shims.
type Manager struct {
	root, state  string
	address      string
	ttrpcAddress string
	self         string
	debug        bool
	shims        map[string]string
	publisher    events.Publisher
	mu           sync.Mutex
	tasks        map[string]*Task
	creating     map[string]bool
	ending       map[string]chan struct{} // tasks deleted whose shim and bundle are still being removed
	waiting      map[string]*launched     // by binary: a shim launched ahead of need
	refilling    map[string]bool
	closed       bool
}

// Options configure a Manager.
type Options struct {
	Root, State  string // the plugin's own directories
	Address      string // berthd's gRPC socket
	TTRPCAddress string
	Debug        bool
	Config       *Config
	Publisher    events.Publisher
}

// New returns a manager; call Load to reconnect to running shims.
func New(o Options) (*Manager, error) {
	for d, mode := range map[string]os.FileMode{o.Root: 0o700, o.State: 0o711} {
		if err := os.MkdirAll(d, mode); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	shims := DefaultConfig().Shims
	if o.Config != nil {
		for k, v := range o.Config.Shims {
			shims[k] = v
		}
	}
	return &Manager{
		root: o.Root, state: o.State, address: o.Address, ttrpcAddress: o.TTRPCAddress,
		self: self, debug: o.Debug, shims: shims, publisher: o.Publisher,
		tasks: map[string]*Task{}, creating: map[string]bool{}, ending: map[string]chan struct{}{},
		waiting: map[string]*launched{}, refilling: map[string]bool{},
	}, nil
}

// Task is a task served by a shim.
type Task struct {
	Namespace, ID string
	bundle        *bundle
	binary        string
	conn          *shimConn
	deleted       atomic.Bool
}

// Shim is the task's shim API.
func (t *Task) Shim() taskapi.TTRPCTaskService { return t.conn.task }

// Bundle is the task's bundle directory.
func (t *Task) Bundle() string { return t.bundle.path }

// CreateOpts describe a new task.
type CreateOpts struct {
	Spec          []byte // OCI runtime spec JSON
	Rootfs        []*types.Mount
	Stdin, Stdout string
	Stderr        string
	Terminal      bool
	Checkpoint    string
	Runtime       string
	Options       *anypb.Any // runtime options of the request, or of the container
}

func key(ns, id string) string { return ns + "/" + id }

// Create starts a shim and creates the task in it; the pid of its init
// process is returned.
func (m *Manager) Create(ctx context.Context, id string, o CreateOpts) (*Task, uint32, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := identifiers.Validate(id); err != nil {
		return nil, 0, fmt.Errorf("task id: %w", err)
	}
	k := key(ns, id)
	m.mu.Lock()
	for m.ending[k] != nil {
		// the task deleted last under this id is still being torn down.
		ending := m.ending[k]
		m.mu.Unlock()
		select {
		case <-ending:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		m.mu.Lock()
	}
	if m.tasks[k] != nil || m.creating[k] {
		m.mu.Unlock()
		return nil, 0, fmt.Errorf("task %q in namespace %q: %w", id, ns, errdefs.ErrAlreadyExists)
	}
	m.creating[k] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.creating, k)
		m.mu.Unlock()
	}()

	binary, err := m.resolve(o.Runtime)
	if err != nil {
		return nil, 0, err
	}
	b, err := m.newBundle(ns, id, o.Spec)
	if err != nil {
		return nil, 0, err
	}
	t := &Task{Namespace: ns, ID: id, bundle: b, binary: binary}
	fail := func(err error) (*Task, uint32, error) {
		m.teardown(context.WithoutCancel(ctx), t)
		return nil, 0, err
	}
	logs, err := openShimLog(ctx, b)
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(b.path, "shim-binary-path"), []byte(binary), 0o600); err != nil {
		logs.Close()
		return fail(err)
	}
	var address string
	if launchable(binary) {
		// the next shim is launched once this task is started (Start), so
		// that its start-up does not compete with runc for the CPU; later
		// if the task is not started soon.
		defer time.AfterFunc(refillAfter, func() { m.refill(binary) })
		address, err = m.startOwn(ctx, b, binary, o.Options)
	} else {
		address, err = m.startShim(ctx, b, binary, o.Options)
	}
	if err != nil {
		logs.Close()
		return fail(err)
	}
	conn, err := dialShim(ctx, address, func() { m.shimGone(t) })
	if err != nil {
		logs.Close()
		return fail(err)
	}
	conn.logs = logs
	t.conn = conn
	// The shim's Create runs to its end even when the client gives up: a
	// cancelled call would leave a half-created container that the shim's
	// Shutdown refuses to drop.
	resp, err := conn.task.Create(context.WithoutCancel(ctx), &taskapi.CreateTaskRequest{
		ID: id, Bundle: b.path, Rootfs: o.Rootfs, Terminal: o.Terminal,
		Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Checkpoint: o.Checkpoint, Options: o.Options,
	})
	if err != nil {
		return fail(FromShim(err))
	}
	m.mu.Lock()
	m.tasks[k] = t
	m.mu.Unlock()
	return t, resp.Pid, nil
}

func (m *Manager) resolve(runtime string) (string, error) {
	if runtime == "" {
		runtime = "io.containerd.runc.v2"
	}
	name, ok := m.shims[runtime]
	if !ok {
		var err error
		if name, err = BinaryName(runtime); err != nil {
			return "", err
		}
	}
	return lookPath(name)
}

// Get returns the task id of the context's namespace.
func (m *Manager) Get(ctx context.Context, id string) (*Task, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	t := m.tasks[key(ns, id)]
	m.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("task %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
	}
	return t, nil
}

// List returns the tasks of the context's namespace, sorted by ID.
func (m *Manager) List(ctx context.Context) ([]*Task, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	var out []*Task
	for _, t := range m.tasks {
		if t.Namespace == ns {
			out = append(out, t)
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// refillAfter is when a shim is launched ahead of need after a Create
// that was not followed by a Start.
const refillAfter = 500 * time.Millisecond

// Start starts the task's init, or one of its execs, in its shim. Once an
// init runs, the next shim of its binary is launched ahead of need.
func (m *Manager) Start(ctx context.Context, t *Task, execID string) (*taskapi.StartResponse, error) {
	r, err := t.conn.task.Start(ctx, &taskapi.StartRequest{ID: t.ID, ExecID: execID})
	if err == nil && execID == "" && launchable(t.binary) {
		go m.refill(t.binary)
	}
	return r, err
}

// Delete deletes the task's init process in its shim (FailedPrecondition
// while it runs), shuts the shim down and removes the bundle.
func (m *Manager) Delete(ctx context.Context, t *Task) (*taskapi.DeleteResponse, error) {
	st, err := t.conn.task.State(ctx, &taskapi.StateRequest{ID: t.ID})
	if err != nil {
		return nil, FromShim(err)
	}
	if st.Status == task.Status_RUNNING || st.Status == task.Status_PAUSED || st.Status == task.Status_PAUSING {
		return nil, fmt.Errorf("task %q in namespace %q is %s: kill it before deleting it: %w",
			t.ID, t.Namespace, strings.ToLower(st.Status.String()), errdefs.ErrFailedPrecondition)
	}
	resp, err := t.conn.task.Delete(ctx, &taskapi.DeleteRequest{ID: t.ID})
	if err != nil {
		return nil, FromShim(err)
	}
	// The shim may still be removing the container's runtime state: its
	// shutdown and the bundle's removal finish after the answer, and a
	// Create under the same id waits for them. The marker tells a berthd
	// restarted in between that the task is gone.
	_ = os.WriteFile(filepath.Join(t.bundle.path, deletedMarker), nil, 0o600)
	if done, ok := m.end(t); ok {
		go func() {
			defer done()
			m.shutdownShim(context.WithoutCancel(ctx), t)
		}()
	}
	return resp, nil
}

// deletedMarker, in a bundle, says that the task's Delete was answered.
const deletedMarker = "deleted"

// end claims the removal of t: exactly one of Delete, a failed Create and
// the clean-up after a dead shim removes a task. It takes t out of the
// table and marks its id as ending, so that a Create under the same id
// waits until done is called.
func (m *Manager) end(t *Task) (done func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !t.deleted.CompareAndSwap(false, true) {
		return nil, false
	}
	k := key(t.Namespace, t.ID)
	if m.tasks[k] == t {
		delete(m.tasks, k)
	}
	prev, ending := m.ending[k], make(chan struct{})
	m.ending[k] = ending
	return func() {
		if prev != nil {
			<-prev
		}
		m.mu.Lock()
		if m.ending[k] == ending {
			delete(m.ending, k)
		}
		m.mu.Unlock()
		close(ending)
	}, true
}

// teardown shuts the shim down and removes the task and its bundle, unless
// another path already does.
func (m *Manager) teardown(ctx context.Context, t *Task) {
	if done, ok := m.end(t); ok {
		defer done()
		m.shutdownShim(ctx, t)
	}
}

// shutdownShim shuts the shim of an ended task down and removes its bundle.
func (m *Manager) shutdownShim(ctx context.Context, t *Task) {
	if t.conn != nil {
		// the shim answers Shutdown once it has finished its runc deletes.
		sctx, cancel := context.WithTimeout(ctx, shimDeleteTimeout)
		_, _ = t.conn.task.Shutdown(sctx, &taskapi.ShutdownRequest{ID: t.ID})
		cancel()
		t.conn.Close()
	}
	if err := t.bundle.remove(); err != nil {
		log.G(ctx).WithError(err).WithField("id", t.ID).Warn("remove bundle")
	}
}

// shimGone runs when a shim connection drops without a Delete.
func (m *Manager) shimGone(t *Task) {
	if t.deleted.Load() {
		return
	}
	go m.cleanupDeadShim(context.Background(), t)
}

// cleanupDeadShim runs the shim's `delete`, publishes the task's end and
// removes its bundle, unless another path removes the task already.
func (m *Manager) cleanupDeadShim(ctx context.Context, t *Task) {
	done, ok := m.end(t)
	if !ok {
		return
	}
	defer done()
	ctx = namespaces.WithNamespace(ctx, t.Namespace)
	l := log.G(ctx).WithField("namespace", t.Namespace).WithField("id", t.ID)
	l.Warn("shim disconnected; cleaning up its task")
	resp, err := m.removeGone(ctx, t)
	status := uint32(255)
	var pid uint32
	exited := time.Now()
	if err != nil {
		l.WithError(err).Warn("shim delete")
	} else {
		pid = resp.Pid
		if resp.ExitStatus != 0 {
			status = resp.ExitStatus
		}
		if resp.ExitedAt != nil {
			exited = resp.ExitedAt.AsTime()
		}
	}
	if m.publisher != nil {
		_ = m.publisher.Publish(ctx, "/tasks/exit", &eventtypes.TaskExit{ContainerID: t.ID, ID: t.ID, Pid: pid, ExitStatus: status, ExitedAt: timestamppb.New(exited)})
		_ = m.publisher.Publish(ctx, "/tasks/delete", &eventtypes.TaskDelete{ContainerID: t.ID, ID: t.ID, Pid: pid, ExitStatus: status, ExitedAt: timestamppb.New(exited)})
	}
}

// removeGone removes what is left of an ended task whose shim is gone or
// going: the shim's `delete` (whatever runc left of the container, and its
// answer), a container init that outlived it, the connection and the
// bundle. The caller holds t's removal (end).
func (m *Manager) removeGone(ctx context.Context, t *Task) (*taskapi.DeleteResponse, error) {
	resp, err := m.runShimDelete(ctx, t.bundle, t.binary)
	killLeftover(ctx, t.bundle)
	if t.conn != nil {
		t.conn.Close()
	}
	t.conn = nil
	m.shutdownShim(ctx, t)
	return resp, err
}

// runShimDelete runs `shim -bundle B delete` and decodes its answer.
func (m *Manager) runShimDelete(ctx context.Context, b *bundle, binary string) (*taskapi.DeleteResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, shimDeleteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, m.shimArgs(b.ns, b.id, "-bundle", b.path, "delete")...)
	cmd.Dir = b.path
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+m.ttrpcAddress, "GRPC_ADDRESS="+m.address, "NAMESPACE="+b.ns)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s delete: %v: %s", filepath.Base(binary), err, ee.Stderr)
		}
		return nil, err
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("%s delete answered %q: %w", filepath.Base(binary), out, err)
	}
	return &resp, nil
}

// Load reconnects to the shims of every bundle left by an earlier berthd.
// Bundles whose shim cannot be reached are cleaned up as dead shims.
func (m *Manager) Load(ctx context.Context) error {
	nsDirs, err := os.ReadDir(m.state)
	if err != nil {
		return err
	}
	for _, nd := range nsDirs {
		ns := nd.Name()
		if !nd.IsDir() || identifiers.Validate(ns) != nil {
			continue
		}
		ids, err := os.ReadDir(filepath.Join(m.state, ns))
		if err != nil {
			return err
		}
		for _, d := range ids {
			if !d.IsDir() || identifiers.Validate(d.Name()) != nil {
				continue
			}
			m.loadTask(namespaces.WithNamespace(ctx, ns), ns, d.Name())
		}
	}
	m.removeOrphanWorkDirs(ctx)
	m.removeStaleSockets()
	return nil
}

func (m *Manager) loadTask(ctx context.Context, ns, id string) {
	b := m.existingBundle(ns, id)
	l := log.G(ctx).WithField("namespace", ns).WithField("id", id)
	binary, err := os.ReadFile(filepath.Join(b.path, "shim-binary-path"))
	if err != nil {
		l.WithError(err).Warn("bundle without shim binary; removing it")
		_ = b.remove()
		return
	}
	t := &Task{Namespace: ns, ID: id, bundle: b, binary: string(binary)}
	address, err := os.ReadFile(filepath.Join(b.path, "address"))
	if _, merr := os.Stat(filepath.Join(b.path, deletedMarker)); merr == nil {
		m.finishDeleted(ctx, t, string(address))
		return
	}
	// Until the task is known to exist, a dropped connection is handled
	// by taskExists, not as a dead shim's.
	gone := make(chan struct{})
	var loading atomic.Bool
	loading.Store(true)
	onClose := func() {
		close(gone)
		if !loading.Load() {
			m.shimGone(t)
		}
	}
	var shimPid int
	if err == nil {
		var logs interface{ Close() error }
		logs, err = openShimLog(ctx, b)
		if err == nil {
			t.conn, err = dialShim(ctx, string(address), onClose)
			if err == nil {
				t.conn.logs = logs
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var resp *taskapi.ConnectResponse
				resp, err = t.conn.task.Connect(cctx, &taskapi.ConnectRequest{ID: id})
				cancel()
				if err == nil {
					shimPid = int(resp.ShimPid)
				}
			} else {
				logs.Close()
			}
		}
	}
	if err == nil && !m.taskExists(ctx, t, string(address), shimPid, gone) {
		return
	}
	loading.Store(false)
	select {
	case <-gone:
		err = errors.New("connection closed")
	default:
	}
	if err != nil {
		l.WithError(err).Warn("shim of a bundle is gone")
		m.cleanupDeadShim(ctx, t)
		return
	}
	m.mu.Lock()
	if t.deleted.Load() {
		// the connection dropped just now and the dead-shim path took it
		m.mu.Unlock()
		return
	}
	m.tasks[key(ns, id)] = t
	m.mu.Unlock()
	l.Info("reconnected to running shim")
}

// taskExists reports whether the reconnected shim of t serves its task.
// A shim may hold none: berthd stopped after launching it and before its
// Create succeeded. That Create fails once the connection that asked for
// it is gone, but it may still be running (runc and its clean-up take a
// moment) or have just succeeded. So, until the shim exits or the task
// appears: ask the shim to shut down (it exits once it holds no task) and
// look again. Once asked, a shim that stops answering is taken to be
// leaving. A shim that does not leave within shimDeleteTimeout is killed,
// unless another bundle names its address (a shim serving several tasks).
// Either way t is then removed here, without events (no client saw it),
// and taskExists reports false.
func (m *Manager) taskExists(ctx context.Context, t *Task, address string, shimPid int, gone <-chan struct{}) bool {
	l := log.G(ctx).WithField("namespace", t.Namespace).WithField("id", t.ID)
	deadline := time.Now().Add(shimDeleteTimeout)
	call := func(f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, min(5*time.Second, max(time.Until(deadline), time.Millisecond)))
		defer cancel()
		return f(cctx)
	}
	for asked := false; ; {
		err := call(func(ctx context.Context) error {
			_, err := t.conn.task.State(ctx, &taskapi.StateRequest{ID: t.ID})
			return err
		})
		if err == nil || (!asked && !errdefs.IsNotFound(FromShim(err))) {
			return true // there, or (not asked yet) an error the usual paths report
		}
		if !asked {
			l.Info("shim without its task (berthd stopped during the task's Create); shutting it down")
		}
		if errdefs.IsNotFound(FromShim(err)) {
			asked = true
			_ = call(func(ctx context.Context) error {
				_, err := t.conn.task.Shutdown(ctx, &taskapi.ShutdownRequest{ID: t.ID})
				return err
			})
		}
		select {
		case <-gone:
		case <-time.After(min(100*time.Millisecond, max(time.Until(deadline), 0))):
			if time.Now().Before(deadline) {
				continue
			}
			if shimPid > 1 && !m.addressShared(t, address) {
				l.WithField("pid", shimPid).Warn("shim without its task did not exit when asked to; killing it")
				_ = unix.Kill(shimPid, unix.SIGKILL)
			} else {
				l.Warn("shim without its task did not exit when asked to; leaving it to the other tasks it serves")
			}
		}
		break
	}
	if done, ok := m.end(t); ok {
		if _, err := m.removeGone(ctx, t); err != nil {
			l.WithError(err).Debug("shim delete of a task never created")
		}
		done()
	}
	return false
}

// addressShared reports whether a bundle other than t's names address: a
// shim that serves several tasks.
func (m *Manager) addressShared(t *Task, address string) bool {
	ids, _ := os.ReadDir(filepath.Join(m.state, t.Namespace))
	for _, d := range ids {
		if d.Name() == t.ID {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(m.state, t.Namespace, d.Name(), "address")); err == nil && string(b) == address {
			return true
		}
	}
	return false
}

// finishDeleted completes the removal of a task whose Delete was answered
// before berthd stopped: its shim is shut down, or, when gone, its `delete`
// removes the runtime state; no events (they were published) and nothing
// is killed.
func (m *Manager) finishDeleted(ctx context.Context, t *Task, address string) {
	done, _ := m.end(t)
	defer done()
	if conn, err := dialShim(ctx, address, func() {}); err == nil {
		t.conn = conn
		// the shim has usually deleted it already (NotFound); if not, now.
		dctx, cancel := context.WithTimeout(ctx, shimDeleteTimeout)
		_, _ = conn.task.Delete(dctx, &taskapi.DeleteRequest{ID: t.ID})
		cancel()
	} else if _, err := m.runShimDelete(ctx, t.bundle, t.binary); err != nil {
		log.G(ctx).WithError(err).WithField("id", t.ID).Warn("shim delete of a deleted task")
	}
	m.shutdownShim(ctx, t)
}

// Close waits for the tasks being torn down, lets the shims launched ahead
// of need go, and drops the connections to the other shims: they and their
// tasks keep running.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	for b, l := range m.waiting {
		l.abandon()
		delete(m.waiting, b)
	}
	var ending []chan struct{}
	for _, c := range m.ending {
		ending = append(ending, c)
	}
	m.mu.Unlock()
	for _, c := range ending {
		<-c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tasks {
		t.deleted.Store(true) // not a dead shim: berthd is leaving
		t.conn.Close()
	}
	return nil
}
