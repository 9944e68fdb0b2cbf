package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/shim/bootstrap"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// berth's own shim is launched by berthd itself (package bootstrap) rather
// than through its `start` verb, which saves a process start per task, and
// one is kept launched ahead of need per binary, which saves the other:
// a task's Create then only hands the waiting shim its identity. Other
// shims go through `start`, as containerd runs them.
const ownShim = "containerd-shim-berth-v2"

func launchable(binary string) bool { return filepath.Base(binary) == ownShim }

// launched is a shim server started by berthd that waits for its task.
type launched struct {
	pid    int
	socket string   // its task socket
	pipe   *os.File // the write end of its bootstrap pipe
}

// abandon lets an unclaimed shim go: it reads EOF, removes its socket and
// exits.
func (l *launched) abandon() { l.pipe.Close() }

// launch starts a shim server of binary that waits for its task.
func (m *Manager) launch(binary string) (*launched, error) {
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := "l-" + hex.EncodeToString(rnd[:])
	path := filepath.Join(filepath.Dir(m.state), "s", name)
	if len(path) > bootstrap.MaxSocketPath {
		path = filepath.Join("/run/berth/s", name)
	}
	ul, err := bootstrap.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("task socket for a shim: %w", err)
	}
	lf, err := ul.File()
	ul.Close()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	defer lf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	defer pr.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		pw.Close()
		os.Remove(path)
		return nil, err
	}
	defer null.Close()

	args := []string{binary, "-address", m.address, "-publish-binary", m.self}
	if m.debug {
		args = append(args, "-debug")
	}
	args = append(args, bootstrap.Verb)
	pidfd := -1
	p, err := os.StartProcess(binary, args, &os.ProcAttr{
		Dir: m.state,
		Env: bootstrap.ServerEnv(os.Environ(),
			"TTRPC_ADDRESS="+m.ttrpcAddress, "GRPC_ADDRESS="+m.address, "MAX_SHIM_VERSION=2"),
		Files: []*os.File{null, null, null, lf, pr}, // fds 3 and 4: see bootstrap
		Sys:   &syscall.SysProcAttr{Setsid: true, PidFD: &pidfd},
	})
	if err != nil {
		pw.Close()
		os.Remove(path)
		return nil, fmt.Errorf("launch shim %s: %w", binary, err)
	}
	pid := p.Pid // before reapLater, which releases p
	if err := bootstrap.AdjustOOMScore(pid, os.Getpid()); err != nil {
		log.L.WithError(err).Debug("adjust oom score of a shim")
	}
	reapLater(p, pidfd)
	return &launched{pid: pid, socket: path, pipe: pw}, nil
}

// reapLater collects the exit of a child shim without holding a thread
// while it runs: berthd is its parent until berthd exits. The shim's pidfd
// turns readable when it exits.
func reapLater(p *os.Process, pidfd int) {
	if pidfd < 0 || unix.SetNonblock(pidfd, true) != nil {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		go func() { _, _ = p.Wait() }()
		return
	}
	pid := p.Pid
	_ = p.Release()
	f := os.NewFile(uintptr(pidfd), "pidfd")
	go func() {
		defer f.Close()
		var werr error
		rc, err := f.SyscallConn()
		if err == nil {
			err = rc.Read(func(fd uintptr) bool {
				for {
					var info unix.Siginfo
					werr = unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG, nil)
					if werr != unix.EINTR {
						return werr != nil || info.Signo != 0 // reaped, or an error
					}
				}
			})
		}
		if err != nil || (werr != nil && werr != unix.ECHILD) {
			// a kernel that cannot poll or wait on a pidfd (before 5.4):
			// wait the old way, a thread for the shim's lifetime.
			var ws unix.WaitStatus
			for {
				if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
					return
				}
			}
		}
	}()
}

// startOwn gives the task of bundle b to a launched shim of binary (the
// one waiting, or a new one) and returns its address. The next waiting
// shim is launched (refill) once the task is started (Manager.Start), so
// that the launch does not compete with runc for the CPU.
func (m *Manager) startOwn(ctx context.Context, b *bundle, binary string, opts *anypb.Any) (string, error) {
	cfg := bootstrap.Config{Namespace: b.ns, ID: b.id, Bundle: b.path, Debug: m.debug}
	if opts != nil {
		var err error
		if cfg.Options, err = proto.Marshal(opts); err != nil {
			return "", err
		}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if len(raw) > bootstrap.MaxConfig {
		return "", fmt.Errorf("task %s/%s: runtime options of %d bytes: %w", b.ns, b.id, len(raw), errdefs.ErrInvalidArgument)
	}
	for attempt := 0; ; attempt++ {
		l := m.takeWaiting(binary)
		if l == nil {
			if l, err = m.launch(binary); err != nil {
				return "", err
			}
		}
		address := "unix://" + l.socket
		if err = os.WriteFile(filepath.Join(b.path, "address"), []byte(address), 0o600); err != nil {
			l.abandon()
			return "", err
		}
		_, err = l.pipe.Write(raw)
		l.pipe.Close()
		if err == nil {
			return address, nil
		}
		// the waiting shim is gone (killed?): once more with a new one.
		log.G(ctx).WithError(err).Warn("hand a task to a launched shim")
		os.Remove(l.socket)
		if attempt > 0 {
			return "", fmt.Errorf("hand task %s/%s to shim %d: %w", b.ns, b.id, l.pid, err)
		}
	}
}

// takeWaiting returns the shim of binary launched ahead, if any.
func (m *Manager) takeWaiting(binary string) *launched {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.waiting[binary]
	delete(m.waiting, binary)
	return l
}

// refill launches a shim of binary ahead of need unless one waits already.
func (m *Manager) refill(binary string) {
	m.mu.Lock()
	if m.closed || m.waiting[binary] != nil || m.refilling[binary] {
		m.mu.Unlock()
		return
	}
	m.refilling[binary] = true
	m.mu.Unlock()
	l, err := m.launch(binary)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.refilling, binary)
	if err != nil {
		log.L.WithError(err).Warn("launch a shim ahead of need")
		return
	}
	if m.closed || m.waiting[binary] != nil {
		l.abandon()
		return
	}
	m.waiting[binary] = l
}

// removeStaleSockets removes the sockets of launched shims that no longer
// listen (killed before they could remove them).
func (m *Manager) removeStaleSockets() {
	// only our own directory: /run/berth/s is shared with other instances,
	// and a socket caught between bind and listen refuses connections too.
	for _, dir := range []string{filepath.Join(filepath.Dir(m.state), "s")} {
		names, _ := filepath.Glob(filepath.Join(dir, "l-*"))
		for _, p := range names {
			if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
				c.Close()
			} else if errors.Is(err, syscall.ECONNREFUSED) {
				os.Remove(p)
			}
		}
	}
}

// Prepare launches a shim ahead of the first task of the default runtime
// when that is served by berth's own shim.
func (m *Manager) Prepare() {
	if binary, err := m.resolve(""); err == nil && launchable(binary) {
		go m.refill(binary)
	}
}
