package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/shim/bootstrap"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// serveLaunched is the serve verb: berthd launched this server itself
// (package bootstrap). It waits for the task's identity on the bootstrap
// pipe, moves into the task's bundle and serves it; EOF without one means
// berthd is gone, and the shim leaves without serving.
func serveLaunched(cfg config) (err error) {
	pipe := os.NewFile(bootstrap.PipeFD, "bootstrap")
	raw, err := readLimited(pipe, bootstrap.MaxConfig)
	pipe.Close()
	// Until it serves, a failing shim removes its socket itself, and tells
	// why in the bundle's log once it is there: its stderr is /dev/null.
	inBundle := false
	defer func() {
		if err == nil {
			return
		}
		if sa, serr := unix.Getsockname(bootstrap.ListenerFD); serr == nil {
			if u, ok := sa.(*unix.SockaddrUnix); ok {
				removeSocket("unix://" + u.Name)
			}
		}
		if inBundle {
			setupLogging(false)
			log.L.WithError(err).Error("shim launched by berthd cannot serve its task")
		}
	}()
	if err != nil {
		return fmt.Errorf("read bootstrap: %w", err)
	}
	if len(raw) == 0 {
		return errNotClaimed
	}
	var b bootstrap.Config
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("decode bootstrap: %w", err)
	}
	cfg.namespace, cfg.id, cfg.bundle, cfg.debug = b.Namespace, b.ID, b.Bundle, cfg.debug || b.Debug
	if err := validateIDs(cfg); err != nil {
		return err
	}
	if !filepath.IsAbs(cfg.bundle) {
		return fmt.Errorf("bundle %q is not absolute", cfg.bundle)
	}
	if err := os.Chdir(cfg.bundle); err != nil {
		return err
	}
	inBundle = true
	if len(b.Options) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(b.Options, &a); err != nil {
			return fmt.Errorf("decode options: %w", err)
		}
		opts, err := parseOptions(&a)
		if err != nil {
			return err
		}
		if opts.ShimCgroup != "" {
			if err := joinCgroup(opts.ShimCgroup, os.Getpid()); err != nil {
				return fmt.Errorf("join shim cgroup %s: %w", opts.ShimCgroup, err)
			}
		}
	}
	return serve(withIDs(cfg), cfg)
}

// errNotClaimed: the pipe ended without a task (berthd stopped or died).
var errNotClaimed = errors.New("no task before berthd went away")

// serve is the shim server, with the task socket's listener on fd 3 and
// cwd = bundle: launched by start, or by berthd through serveLaunched.
func serve(ctx context.Context, cfg config) error {
	setupLogging(cfg.debug)
	// One P: the shim's work is waiting on runc and pipes, and every P
	// costs per-P caches and, with its own thread, a signal stack. The
	// launcher set GOMAXPROCS=1 (bootstrap.ServerEnv); runc and logging
	// binaries get the default again.
	runtime.GOMAXPROCS(1)
	os.Unsetenv("GOMAXPROCS")

	signals := make(chan os.Signal, 64)
	// SIGPIPE is caught so that a write to the log fifo without a reader is
	// an EPIPE rather than death; caught (not ignored) signals are reset for
	// children at exec.
	signal.Notify(signals, unix.SIGCHLD, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	lf := os.NewFile(bootstrap.ListenerFD, "task-socket")
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return err
	}

	pub := newPublisher(cfg.ttrpcAddress, cfg.namespace)
	shutdownc := make(chan struct{})
	svc := newService(ctx, cfg.namespace, pub, sync.OnceFunc(func() { close(shutdownc) }))
	r := newReaper(svc.handleExit)
	svc.reaper = r
	runc.Monitor = r

	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return err
	}
	register(srv, svc)
	go func() {
		if err := srv.Serve(ctx, l); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			log.G(ctx).WithError(err).Error("serve task api")
		}
	}()
	log.G(ctx).Debug("shim serving")

loop:
	for {
		select {
		case sig := <-signals:
			switch sig {
			case unix.SIGCHLD:
				r.reap()
			case unix.SIGTERM, unix.SIGINT:
				break loop
			}
		case <-shutdownc:
			break loop
		}
	}
	svc.mu.Lock()
	svc.closing = true // no background runc delete starts after this
	svc.mu.Unlock()
	svc.background.Wait()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	pub.close(5 * time.Second)
	removeSocket("unix://" + l.Addr().String())
	return nil
}

// setupLogging points stdout and stderr at the bundle's log fifo, opened
// non-blocking: when the daemon does not drain it, log lines are dropped
// instead of stalling the shim.
func setupLogging(debugLevel bool) {
	if fd, err := unix.Open("log", unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Dup3(fd, 1, 0)
		_ = unix.Dup3(fd, 2, 0)
		unix.Close(fd)
	}
	_ = log.SetFormat(log.TextFormat)
	if debugLevel {
		_ = log.SetLevel("debug")
	}
}
