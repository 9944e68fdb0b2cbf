package shim

import (
	"context"
	"errors"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// serve is the shim server: the process start launched, with the task
// socket's listener on fd 3 and cwd = bundle.
func serve(ctx context.Context, cfg config) error {
	setupLogging(cfg.debug)
	// One P: the shim's work is waiting on runc and pipes, and every P
	// costs per-P caches and, with its own thread, a signal stack.
	runtime.GOMAXPROCS(1)

	signals := make(chan os.Signal, 64)
	// SIGPIPE is caught so that a write to the log fifo without a reader is
	// an EPIPE rather than death; caught (not ignored) signals are reset for
	// children at exec.
	signal.Notify(signals, unix.SIGCHLD, unix.SIGPIPE, unix.SIGTERM, unix.SIGINT)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	lf := os.NewFile(3, "task-socket")
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
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	pub.close(5 * time.Second)
	if b, err := os.ReadFile(filepath.Join(cfg.bundle, "address")); err == nil {
		removeSocket(string(b))
	}
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
