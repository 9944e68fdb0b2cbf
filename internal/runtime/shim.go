package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// BinaryName maps a runtime name to its shim binary the containerd way:
// io.containerd.NAME.vN → containerd-shim-NAME-vN. An absolute path is used
// as it is.
func BinaryName(runtime string) (string, error) {
	if filepath.IsAbs(runtime) {
		return runtime, nil
	}
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 || parts[len(parts)-2] == "" || parts[len(parts)-1] == "" {
		return "", fmt.Errorf("runtime %q is not of the form io.containerd.NAME.vN: %w", runtime, errdefs.ErrInvalidArgument)
	}
	name := "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
	if strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("runtime %q: %w", runtime, errdefs.ErrInvalidArgument)
	}
	return name, nil
}

// lookPath finds a shim binary on PATH, then beside berthd.
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("shim %s: %w", name, errdefs.ErrNotFound)
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("shim binary %s is not on PATH nor beside berthd: %w", name, errdefs.ErrNotFound)
}

// shimArgs are the global flags every shim invocation gets.
func (m *Manager) shimArgs(ns, id string, extra ...string) []string {
	args := []string{"-namespace", ns, "-address", m.address, "-publish-binary", m.self, "-id", id}
	if m.debug {
		args = append(args, "-debug")
	}
	return append(args, extra...)
}

// startShim runs `shim start` in the bundle and returns the task address.
func (m *Manager) startShim(ctx context.Context, b *bundle, binary string, opts *anypb.Any) (string, error) {
	var stdin []byte
	if opts != nil {
		var err error
		if stdin, err = proto.Marshal(opts); err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, binary, m.shimArgs(b.ns, b.id, "start")...)
	cmd.Dir = b.path
	cmd.Env = append(os.Environ(),
		"TTRPC_ADDRESS="+m.ttrpcAddress,
		"GRPC_ADDRESS="+m.address,
		"NAMESPACE="+b.ns,
		"MAX_SHIM_VERSION=2",
	)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// the shim daemonises: it must not die with this request's context.
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("start shim %s for %s/%s: %v: %s", filepath.Base(binary), b.ns, b.id, err, strings.TrimSpace(stderr.String()))
	}
	return parseAddress(out)
}

// parseAddress accepts a plain address (containerd 1.6 shims) or the JSON
// bootstrap form {"version":2|3,"address":…,"protocol":"ttrpc"}.
func parseAddress(out []byte) (string, error) {
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "{") {
		var p struct {
			Version  int    `json:"version"`
			Address  string `json:"address"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return "", fmt.Errorf("shim start answer %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
		}
		if p.Protocol != "" && p.Protocol != "ttrpc" {
			return "", fmt.Errorf("shim speaks %s, berthd only ttrpc: %w", p.Protocol, errdefs.ErrNotImplemented)
		}
		s = p.Address
	}
	if s == "" {
		return "", fmt.Errorf("shim start printed no address: %w", errdefs.ErrInvalidArgument)
	}
	return s, nil
}

// shimConn is a connection to one shim's task service.
type shimConn struct {
	client *ttrpc.Client
	task   taskapi.TTRPCTaskService
	logs   io.Closer
}

// dialShim connects to a shim at address (unix:///path); onClose runs when
// the connection drops.
func dialShim(ctx context.Context, address string, onClose func()) (*shimConn, error) {
	path := strings.TrimPrefix(address, "unix://")
	if strings.HasPrefix(path, "@") || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("shim address %q: only unix socket paths are accepted: %w", address, errdefs.ErrInvalidArgument)
	}
	var (
		conn net.Conn
		err  error
	)
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := net.Dialer{Timeout: time.Second}
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("dial shim %s: %w", address, err)
	}
	c := ttrpc.NewClient(conn, ttrpc.WithOnClose(onClose))
	return &shimConn{client: c, task: taskapi.NewTTRPCTaskClient(c)}, nil
}

func (c *shimConn) Close() error {
	if c.logs != nil {
		c.logs.Close()
	}
	return c.client.Close()
}

// openShimLog creates the bundle's log FIFO and copies what the shim writes
// there into berthd's log at debug level.
func openShimLog(ctx context.Context, b *bundle) (io.Closer, error) {
	f, err := fifo.OpenFifo(context.WithoutCancel(ctx), filepath.Join(b.path, "log"), unix.O_RDWR|unix.O_CREAT|unix.O_NONBLOCK, 0o700)
	if err != nil {
		return nil, err
	}
	rc, err := f.(syscall.Conn).SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := log.G(ctx).WithField("namespace", b.ns).WithField("id", b.id).WithField("source", "shim")
	go relayShimLog(rc, func(line string) {
		if l.Logger.IsLevelEnabled(log.DebugLevel) {
			l.Debug(line)
		}
	})
	return f, nil
}

// shimLogBufs lend the buffer of one read of a shim's log fifo.
var shimLogBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// maxShimLogLine is where a line without its end is passed on anyway.
const maxShimLogLine = 16 << 10

// relayShimLog hands each line written to a shim's log fifo to emit, until
// the fifo is closed. It borrows a buffer only once the fifo is readable,
// so that idle shims cost no buffer, and calls emit outside the read, so
// that a slow log cannot hold up the fifo's Close.
func relayShimLog(rc syscall.RawConn, emit func(line string)) {
	var ls lineSplitter
	for {
		var (
			lines []string
			n     int
			rerr  error
		)
		err := rc.Read(func(fd uintptr) bool {
			bp := shimLogBufs.Get().(*[]byte)
			defer shimLogBufs.Put(bp)
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				return false
			}
			lines = ls.feed((*bp)[:max(n, 0)])
			return true
		})
		for _, l := range lines {
			emit(l)
		}
		if err != nil || rerr != nil || n == 0 {
			if rest := ls.rest(); rest != "" {
				emit(rest)
			}
			return
		}
	}
}

// lineSplitter cuts a stream into lines across reads, and an unfinished
// line into pieces of maxShimLogLine or more.
type lineSplitter struct {
	partial []byte // the start of a line still being written; usually nil
}

// feed returns the lines data completes; it keeps nothing of data.
func (s *lineSplitter) feed(data []byte) (lines []string) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			s.partial = append(s.partial, data...)
			if len(s.partial) >= maxShimLogLine {
				lines = append(lines, string(s.partial))
				s.partial = nil
			}
			return lines
		}
		lines = append(lines, string(s.partial)+string(data[:i]))
		s.partial = nil
		data = data[i+1:]
	}
	return lines
}

// rest is the unfinished line, if any.
func (s *lineSplitter) rest() string { return string(s.partial) }
