package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// igzipMinSize is the compressed size from which a gzip layer goes to
// igzip: below it, starting a process costs more than it saves.
const igzipMinSize = 1 << 20

// igzipPath is igzip's path, or "" when it is not installed, older than
// 2.30 (earlier versions stop after the first gzip member: a layer of
// several members would lose its end) or BERTH_DISABLE_IGZIP is set.
// containerd pipes layers through unpigz in the same way; here ISA-L's
// inflater (Debian package isal) decompresses the benchmark's 88 MB layer
// in 0.22 s, the Go inflater in about 0.7 s and unpigz in 0.8 s.
var igzipPath = sync.OnceValue(func() string {
	if os.Getenv("BERTH_DISABLE_IGZIP") != "" {
		return ""
	}
	p, err := exec.LookPath("igzip")
	if err != nil {
		return ""
	}
	out, err := exec.Command(p, "-V").Output()
	if err != nil || !igzipVersionOK(string(out)) {
		log.L.WithField("path", p).WithField("version", strings.TrimSpace(string(out))).Warn("igzip older than 2.30 (or unreadable version): not used")
		return ""
	}
	return p
})

// igzipFailed logs the first failure to start igzip.
var igzipFailed sync.Once

// igzipVersionOK says whether `igzip -V` printed a version of 2.30 or later
// ("igzip command line interface 2.30.0").
func igzipVersionOK(out string) bool {
	f := strings.Fields(out)
	if len(f) == 0 {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(f[len(f)-1], "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 2 || major == 2 && minor >= 30
}

// igzip reads the output of `igzip -d -c` fed with a gzip stream. The
// helper runs with an empty environment and, when berthd runs as root, as
// nobody without supplementary groups: it only reads and writes its pipes,
// so a flaw in a C inflater fed untrusted layers gets no root and no file
// of berth's (it still shares the uid of other unprivileged daemons; what
// it could do to its output, the diff_id check of the unpacking client
// sees). It ends when its pipes close. A stream it rejects (truncated, a
// bad checksum) is an error at the end of its output, with what it said.
type igzip struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr bytes.Buffer
	wait   func() error
}

func startIgzip(path string, in io.Reader) (io.ReadCloser, error) {
	cmd := exec.Command(path, "-d", "-c", "-q")
	cmd.Env, cmd.Dir, cmd.Stdin = []string{}, "/", in
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	z := &igzip{cmd: cmd}
	cmd.Stderr = &limitedWriter{b: &z.stderr, n: 4 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if f, ok := out.(*os.File); ok {
		// fewer, larger hand-overs between igzip and the reader
		if rc, err := f.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start igzip: %w", err)
	}
	z.out = out
	z.wait = sync.OnceValue(cmd.Wait)
	return z, nil
}

func (z *igzip) Read(p []byte) (int, error) {
	n, err := z.out.Read(p)
	if err == io.EOF {
		if werr := z.wait(); werr != nil {
			return n, fmt.Errorf("gzip layer: igzip: %w: %s", werr, bytes.TrimSpace(z.stderr.Bytes()))
		}
	}
	return n, err
}

// Close stops igzip if it still runs and waits for it.
func (z *igzip) Close() error {
	_ = z.cmd.Process.Kill() // an error only says it already exited
	err := z.wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed here, or its failure was returned by Read
	}
	return err
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	b *bytes.Buffer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if k := min(len(p), l.n); k > 0 {
		l.b.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
