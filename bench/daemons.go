package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// daemon is one of the two systems under test, running on its own temporary
// root, state and socket. Workloads reach it through conn.
type daemon struct {
	name    string // "berthd" or "containerd": also the column heading
	dir     string // holds root/, state/, the sockets, the config and the log
	address string
	log     string
	cmd     *exec.Cmd
	exited  chan struct{}
	startup time.Duration // from exec to the first answer of Version.Version
	version string

	conns []*grpc.ClientConn // one shared, or one per client with --conn-per-client

	env      []string        // the daemon's environment (nil: the benchmark's)
	imported map[string]bool // the image archives already imported, by path
	sys      *sysEnv         // what the system rows and the snapshot workload share
}

// conn is the connection client number worker uses.
func (d *daemon) conn(worker int) *grpc.ClientConn { return d.conns[worker%len(d.conns)] }

// pid is the daemon's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// startBerthd starts the berthd binary bin with only a `version = 2` config,
// so that its built-in defaults serve. Its PATH starts with bin's directory,
// where the shim built with it is.
func startBerthd(ctx context.Context, bin string) (*daemon, error) {
	d, err := newDaemon("berthd")
	if err != nil {
		return nil, err
	}
	d.env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cfg := filepath.Join(d.dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\n"), 0o644); err != nil {
		return nil, err
	}
	return d, d.start(ctx, bin, "--root", filepath.Join(d.dir, "root"), "--state", filepath.Join(d.dir, "state"),
		"--address", d.address, "--config", cfg)
}

// startContainerd starts containerd 1.6 with CRI disabled and every path
// (including the opt plugin's, which defaults to /opt/containerd) inside its
// temporary directory. Everything else is containerd's default.
func startContainerd(ctx context.Context, bin string) (*daemon, error) {
	d, err := newDaemon("containerd")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(d.dir, "config.toml")
	toml := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.address, d.address+".ttrpc", filepath.Join(d.dir, "opt"))
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		return nil, err
	}
	return d, d.start(ctx, bin, "--config", cfg)
}

func newDaemon(name string) (*daemon, error) {
	// a short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "berth-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	return &daemon{name: name, dir: dir, address: filepath.Join(dir, name+".sock"), log: filepath.Join(dir, name+".log")}, nil
}

// start runs the daemon and waits until it answers Version.Version.
func (d *daemon) start(ctx context.Context, bin string, args ...string) error {
	logf, err := os.Create(d.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.Env = d.env
	// the daemon dies with the benchmark, whatever happens to it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	begin := time.Now()
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()

	// poll with a fresh connection each time: gRPC's reconnect back-off
	// (1 s at first) would otherwise be what the start-up time measures.
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := version(ctx, d.address)
		if err == nil {
			d.startup = time.Since(begin)
			d.version = strings.TrimSpace(v.Version + " " + v.Revision)
			conn, err := dial(d.address)
			if err != nil {
				return err
			}
			d.conns = []*grpc.ClientConn{conn}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within 30s: %v\n%s", d.name, d.address, err, d.logTail())
		}
		select {
		case <-d.exited:
			return fmt.Errorf("%s exited during start-up (%v):\n%s", d.name, d.cmd.ProcessState, d.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// version asks the daemon at address its version on a new connection.
func version(ctx context.Context, address string) (*versionapi.VersionResponse, error) {
	conn, err := dial(address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return versionapi.NewVersionClient(conn).Version(ctx, &emptypb.Empty{})
}

// connectPerClient gives each of n clients its own connection.
func (d *daemon) connectPerClient(n int) error {
	for len(d.conns) < n {
		c, err := dial(d.address)
		if err != nil {
			return err
		}
		d.conns = append(d.conns, c)
	}
	return nil
}

// dial connects the way containerd's Go client does: one HTTP/2 connection
// over the unix socket, with its 16 MiB message limits.
func dial(address string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
	)
}

// stop removes what is left of the benchmark's containers (a run that
// finished has removed them all: anything found here is reported), closes
// the connections, stops the daemon (SIGTERM, SIGKILL after 15 s), kills
// shims that outlive it, unmounts what is still mounted below its directory
// and removes the directory.
func (d *daemon) stop() error {
	var errs []error
	if d.alive() && len(d.conns) > 0 {
		if n, err := removeAllTasks(d); n > 0 || err != nil {
			errs = append(errs, fmt.Errorf("%s: %d tasks were left at the end; killed and deleted them", d.name, n), err)
		}
	}
	for _, c := range d.conns {
		c.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil && d.exited != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
			errs = append(errs, fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", d.name))
		}
	}
	if n := killShims(d.address, 2*time.Second); n > 0 {
		errs = append(errs, fmt.Errorf("%s: %d shims outlived the daemon; killed them", d.name, n))
	}
	if n, err := unmountUnder(d.dir); n > 0 || err != nil {
		errs = append(errs, fmt.Errorf("%s: %d mounts were left below %s; unmounted them", d.name, n, d.dir), err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// alive reports whether the daemon process is still running.
func (d *daemon) alive() bool {
	if d.exited == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// buildBerthd builds ./cmd/... (berthd, berth and the shim) of the module in
// the current directory (or above) into dir and returns berthd's path.
func buildBerthd(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run the benchmark inside the berth module (go env GOMOD: %q, %v)", gomod, err)
	}
	bin := filepath.Join(dir, "berthd")
	// as `make build` builds them: static, stripped, without gRPC's tracing.
	cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", dir+"/", "./cmd/...")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
	}
	return bin, nil
}
