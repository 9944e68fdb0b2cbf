package testutil

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// RemoveBinaries removes what Binary built; a TestMain calls it after
// the tests ran.
func RemoveBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Binary returns the path of one of berth's commands (berthd, berth,
// containerd-shim-berth-v2), built once per test process from this tree.
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "berth-bin-")
		if buildErr != nil {
			return
		}
		// as `make build`: static, stripped, without gRPC's tracing
		cmd := exec.Command("go", "build", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary %s was not built: %v", name, err)
	}
	return p
}

// Daemon is a berthd running on its own root, state and socket.
type Daemon struct {
	t       testing.TB
	Dir     string // holds root/, state/, the sockets and the log
	Address string
	Root    string
	State   string
	Log     string
	Args    []string // extra berthd flags
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartDaemon starts berthd as root on fresh directories and stops it when
// the test ends. Extra flags (say, --config) can be given.
func StartDaemon(t testing.TB, args ...string) *Daemon {
	t.Helper()
	RequireRoot(t)
	// a short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "berth-t-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		t:       t,
		Dir:     dir,
		Address: filepath.Join(dir, "berthd.sock"),
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(dir, "state"),
		Log:     filepath.Join(dir, "berthd.log"),
		Args:    args,
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(d.Log); err == nil {
				t.Logf("berthd log:\n%s", tail(b, 4000))
			}
		}
		os.RemoveAll(dir)
	})
	d.Start()
	return d
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Start (re)starts berthd on the daemon's directories and waits until it
// answers.
func (d *Daemon) Start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	args := append([]string{"--root", d.Root, "--state", d.State, "--address", d.Address, "--log-level", "debug",
		"--config", filepath.Join(d.Dir, "none.toml")}, d.Args...)
	if _, err := os.Stat(filepath.Join(d.Dir, "none.toml")); err != nil {
		_ = os.WriteFile(filepath.Join(d.Dir, "none.toml"), []byte("version = 2\n"), 0o644)
	}
	d.cmd = exec.Command(Binary(d.t, "berthd"), args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); logf.Close(); close(done) }(d.cmd, d.done)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := d.Ctr("version"); err == nil {
			return
		}
		select {
		case <-d.done:
			b, _ := os.ReadFile(d.Log)
			d.t.Fatalf("berthd exited during start-up:\n%s", tail(b, 4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
	d.t.Fatalf("berthd did not answer on %s within 20s", d.Address)
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 15s).
func (d *Daemon) Stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (d *Daemon) Kill() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	d.cmd = nil
}

// Pid is berthd's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Exited reports whether berthd has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Berth runs our CLI against the daemon and returns its combined output.
func (d *Daemon) Berth(args ...string) (string, error) {
	return run(Binary(d.t, "berth"), append([]string{"-a", d.Address}, args...)...)
}

// Ctr runs Debian's ctr against the daemon and returns its combined output.
func (d *Daemon) Ctr(args ...string) (string, error) {
	return run("ctr", append([]string{"-a", d.Address}, args...)...)
}

func run(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %v: %w\n%s", filepath.Base(bin), args, err, out.String())
	}
	return out.String(), err
}

// Conn dials the daemon's gRPC socket; closed when the test ends.
func (d *Daemon) Conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("unix://"+d.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// WithNamespace returns an outgoing context carrying ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, namespaces.GRPCHeader, ns)
}
