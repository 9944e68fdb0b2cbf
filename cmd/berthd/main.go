// Command berthd is the berth daemon: containerd's API on a unix socket.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/plugin"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/version"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "berthd: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("berthd", flag.ContinueOnError)
	cfgPath := fs.String("config", config.DefaultConfigPath, "path to the TOML config")
	address := fs.String("address", "", "gRPC socket (default "+config.DefaultAddress+")")
	root := fs.String("root", "", "persistent state directory (default "+config.DefaultRoot+")")
	state := fs.String("state", "", "runtime state directory (default "+config.DefaultState+")")
	level := fs.String("log-level", "", "log level: trace, debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *showVersion {
		fmt.Printf("berthd %s %s\n", version.Version, version.Revision)
		return nil
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(*cfgPath, explicit)
	if err != nil {
		return err
	}
	for _, o := range []struct{ flag, into *string }{{address, &cfg.GRPC.Address}, {root, &cfg.Root}, {state, &cfg.State}, {level, &cfg.Debug.Level}} {
		if *o.flag != "" {
			*o.into = *o.flag
		}
	}
	if err := log.SetLevel(cfg.Debug.Level); err != nil {
		return fmt.Errorf("log level %q: %w", cfg.Debug.Level, err)
	}
	if cfg.Debug.Format == "json" {
		_ = log.SetFormat(log.JSONFormat)
	}
	for _, p := range []*string{&cfg.Root, &cfg.State, &cfg.GRPC.Address} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	// The root is for berthd alone (containerd's CVE-2024-25621); the
	// state is traversable, as containerd's, and holds 0700 directories.
	// An existing state is left as it is (it may be a directory of the
	// system's); one made here gets its mode whatever the umask.
	_, statErr := os.Stat(cfg.State)
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.State, 0o711); err != nil {
		return err
	}
	if inside(cfg.State, cfg.Root) {
		return fmt.Errorf("state %s must not be the root %s or inside it (the root is for berthd alone; bundles in the state must stay reachable)", cfg.State, cfg.Root)
	}
	if os.IsNotExist(statErr) {
		if err := os.Chmod(cfg.State, 0o711); err != nil {
			return err
		}
	}
	unlock, err := lockRoot(cfg.Root)
	if err != nil {
		return err
	}
	defer unlock()
	// A looser mode left by an earlier version is tightened, once this
	// berthd holds the root.
	if err := os.Chmod(cfg.Root, 0o700); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := plugin.Env{
		Root: cfg.Root, State: cfg.State, GRPCAddress: cfg.GRPC.Address, TTRPCAddress: cfg.TTRPCAddress(),
		Debug: cfg.Debug.Level == "debug" || cfg.Debug.Level == "trace",
	}
	set, err := plugin.Init(ctx, builtins(), env, cfg.Decode, cfg.Disabled())
	if err != nil {
		return err
	}
	var services []any
	for _, p := range set.All() {
		r := p.Registration
		inst, err := p.Instance()
		entry := log.G(ctx).WithField("plugin", r.URI())
		switch {
		case plugin.IsSkipped(err):
			entry.WithError(err).Info("plugin skipped")
		case err != nil:
			entry.WithError(err).Warn("plugin failed to start")
		default:
			entry.Debug("plugin started")
			if r.Type == plugin.GRPCPlugin || r.Type == plugin.TTRPCPlugin {
				services = append(services, inst)
			}
		}
	}
	defer closeAll(ctx, set)

	srv, err := server.New(cfg, services)
	if err != nil {
		return err
	}
	errc, err := srv.Serve(ctx)
	if err != nil {
		return err
	}
	log.G(ctx).WithField("address", cfg.GRPC.Address).WithField("ttrpc", cfg.TTRPCAddress()).
		WithField("version", version.Version).Info("berthd serving")

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGTERM, unix.SIGINT)
	select {
	case sig := <-sigc:
		log.G(ctx).WithField("signal", sig).Info("shutting down")
	case err := <-errc:
		log.G(ctx).WithError(err).Error("server stopped")
	}
	stopCtx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	srv.Stop(stopCtx)
	return nil
}

// closeAll closes plugin instances that hold resources, newest first.
func closeAll(ctx context.Context, set *plugin.Set) {
	all := set.All()
	for i := len(all) - 1; i >= 0; i-- {
		if inst, err := all[i].Instance(); err == nil {
			if c, ok := inst.(io.Closer); ok {
				if err := c.Close(); err != nil {
					log.G(ctx).WithError(err).WithField("plugin", all[i].Registration.URI()).Warn("close")
				}
			}
		}
	}
}

// inside reports whether dir is root or below it, links resolved.
func inside(dir, root string) bool {
	d, err1 := filepath.EvalSymlinks(dir)
	r, err2 := filepath.EvalSymlinks(root)
	if err1 != nil || err2 != nil {
		d, r = dir, root
	}
	rel, err := filepath.Rel(r, d)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// lockRoot makes sure only one berthd uses a root directory. The lock is
// a POSIX record lock, which belongs to this process alone and goes with
// it: a flock belongs to the open file, which a child caught between fork
// and exec (a shim being launched when berthd is killed) still holds for a
// moment, long enough to refuse a berthd restarted at once.
func lockRoot(root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, "berthd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	if err == nil {
		// berthd before 2026-11-23 held a flock instead, which a record
		// lock does not see: one still running refuses this probe (one
		// started after this berthd would not see this one)
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("root %s is in use by another berthd (lock %s): %w", root, f.Name(), err)
	}
	return func() { f.Close() }, nil
}
