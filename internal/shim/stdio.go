package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// stdio is what the client asked for: FIFO paths or binary:// / file://
// URIs, as given to Create and Exec.
type stdio struct {
	stdin, stdout, stderr string
	terminal              bool
}

// copyBufSize is small on purpose: a shim holds one buffer per stream of
// every process for the process's lifetime, and pipes hold 64 KiB anyway.
const copyBufSize = 8 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBuffered copies through a pooled buffer. The wrappers hide
// ReaderFrom/WriterTo, whose generic fallbacks would allocate a 32 KiB
// buffer of their own per copy.
func copyBuffered(dst io.Writer, src io.Reader) {
	bp := bufPool.Get().(*[]byte)
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	bufPool.Put(bp)
}

// processIO joins one process's stdio to the client's. Output always goes
// through copying goroutines: from runc's pipes, or from the pty master when
// terminal, into sinks (a FIFO held open with an extra read handle so that
// writes never fail while no client is attached, an appended file, or the
// pipes of a logging binary).
type processIO struct {
	ctx    context.Context
	s      stdio
	pipes  *pipes // nil when terminal
	out    io.WriteCloser
	err    io.WriteCloser
	logger *logger

	mu         sync.Mutex
	stdinSrc   *os.File // read end of the stdin FIFO
	stdinKeep  *os.File // our write end of it, dropped by CloseIO
	stdinShut  bool
	master     *os.File // pollable duplicate of the pty master
	console    console.Console
	copies     sync.WaitGroup
	closedOnce sync.Once
}

// newProcessIO opens the output sinks and, unless terminal, the pipes runc
// will hand to the process. id and ns are passed to logging binaries.
func newProcessIO(ctx context.Context, r *reaper, id, ns string, s stdio, uid, gid int) (_ *processIO, retErr error) {
	pio := &processIO{ctx: ctx, s: s}
	defer func() {
		if retErr != nil {
			pio.close()
		}
	}()
	if s.stdout != "" || s.stderr != "" {
		u, err := url.Parse(firstNonEmpty(s.stdout, s.stderr))
		if err != nil {
			return nil, fmt.Errorf("stdio uri %q: %w", s.stdout, err)
		}
		switch u.Scheme {
		case "binary":
			lg, err := startLogger(ctx, r, u, id, ns)
			if err != nil {
				return nil, err
			}
			pio.logger = lg
			pio.out, pio.err = lg.stdout, lg.stderr
		case "file":
			f, err := openAppend(u.Path)
			if err != nil {
				return nil, err
			}
			pio.out, pio.err = f, nopCloser{f}
			if s.terminal {
				pio.err = nil
			}
		case "", "fifo":
			if pio.out, err = openSink(s.stdout); err != nil {
				return nil, err
			}
			if s.stderr == s.stdout && pio.out != nil {
				pio.err = nopCloser{pio.out}
			} else if pio.err, err = openSink(s.stderr); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("stdio scheme %q of %q is not supported", u.Scheme, s.stdout)
		}
	}
	if !s.terminal {
		p, err := newPipes(s.stdin != "", pio.out != nil, pio.err != nil, uid, gid)
		if err != nil {
			return nil, err
		}
		pio.pipes = p
	}
	return pio, nil
}

// runcIO is what go-runc gives the process, nil for a terminal.
func (pio *processIO) runcIO() runc.IO {
	if pio.pipes == nil {
		return nil
	}
	return pio.pipes
}

// start begins copying, once runc has started the process. con is the pty
// master runc sent, when terminal.
func (pio *processIO) start(con console.Console) error {
	var stdinDst io.Writer
	var closeDst func()
	if con != nil {
		fd, err := unix.FcntlInt(con.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dup pty master: %w", err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return err
		}
		pio.mu.Lock()
		pio.console = con
		pio.master = os.NewFile(uintptr(fd), "pty-master")
		pio.mu.Unlock()
		// the client's stdin ending hangs the terminal up, as with
		// containerd's shim: its processes get SIGHUP.
		stdinDst, closeDst = pio.master, pio.hangup
		if pio.out != nil {
			pio.copyOut(pio.out, ptyReader{pio.master})
		}
	} else {
		p := pio.pipes
		if p.outR != nil {
			pio.copyOut(pio.out, p.outR)
		}
		if p.errR != nil {
			pio.copyOut(pio.err, p.errR)
		}
		if p.stdinW != nil {
			stdinDst, closeDst = p.stdinW, func() { p.stdinW.Close() }
		}
	}
	// when all output has been copied, the client sees end of file, as with
	// containerd's shim; our read handle stays so the FIFO keeps a reader
	go func() {
		pio.copies.Wait()
		for _, w := range []io.WriteCloser{pio.out, pio.err} {
			if cw, ok := w.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}
	}()
	if pio.s.stdin == "" || stdinDst == nil {
		return nil
	}
	src, keep, err := openStdin(pio.s.stdin)
	if err != nil {
		closeDst()
		return err
	}
	pio.mu.Lock()
	pio.stdinSrc, pio.stdinKeep = src, keep
	if pio.stdinShut && keep != nil {
		keep.Close()
	}
	pio.mu.Unlock()
	go func() {
		copyBuffered(stdinDst, src)
		closeDst()
		src.Close()
	}()
	return nil
}

// openStdin opens the client's stdin FIFO for reading, and for writing
// too: that handle of our own keeps the reader from seeing end of file when
// the client goes away (`run -d`, a detached attach). The process sees end
// of file once CloseIO dropped our handle and no client writes.
func openStdin(path string) (src, keep *os.File, err error) {
	if u, err := url.Parse(path); err == nil && u.Scheme == "fifo" {
		path = u.Path
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open stdin %s: %w", path, err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		src, err := os.Open(path)
		return src, nil, err
	}
	// The read end first, non-blocking: opening the write end then
	// cannot block.
	if src, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return nil, nil, fmt.Errorf("open stdin %s: %w", path, err)
	}
	if keep, err = os.OpenFile(path, os.O_WRONLY, 0); err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("open stdin %s: %w", path, err)
	}
	return src, keep, nil
}

func (pio *processIO) copyOut(dst io.WriteCloser, src io.Reader) {
	pio.copies.Add(1)
	go func() {
		defer pio.copies.Done()
		copyBuffered(dst, src)
	}()
}

// closeStdin is CloseIO: drop our own write handle of the stdin FIFO, so
// the process sees end of file once the client's writer is gone too.
func (pio *processIO) closeStdin() {
	pio.mu.Lock()
	defer pio.mu.Unlock()
	if !pio.stdinShut && pio.stdinKeep != nil {
		pio.stdinKeep.Close()
	}
	pio.stdinShut = true
}

// resize sets the pty's window size.
func (pio *processIO) resize(width, height uint32) error {
	pio.mu.Lock()
	defer pio.mu.Unlock() // hangup closes the console under the same lock
	if pio.console == nil {
		return nil
	}
	return pio.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// hangup closes the pty master, both our handle and runc's.
func (pio *processIO) hangup() {
	pio.mu.Lock()
	defer pio.mu.Unlock()
	if pio.master != nil {
		pio.master.Close()
	}
	if pio.console != nil {
		pio.console.Close()
	}
	pio.master, pio.console = nil, nil
}

// wait waits, at most timeout, until output has been copied out.
func (pio *processIO) wait(timeout time.Duration) {
	done := make(chan struct{})
	go func() { pio.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		log.G(pio.ctx).Warn("output of the process is still being copied: closing it")
	}
}

// close releases everything; copies still running end with errors.
func (pio *processIO) close() {
	pio.closedOnce.Do(func() {
		pio.closeStdin()
		pio.mu.Lock()
		src := pio.stdinSrc
		pio.mu.Unlock()
		if src != nil {
			src.Close()
		}
		pio.hangup()
		if pio.pipes != nil {
			pio.pipes.Close()
		}
		if pio.out != nil {
			pio.out.Close()
		}
		if pio.err != nil {
			pio.err.Close()
		}
		if pio.logger != nil {
			pio.logger.wait()
		}
	})
}

// ptyReader ends a copy at EIO, which is how a pty master reports that
// every slave is closed.
type ptyReader struct{ f *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	if err != nil && errors.Is(err, unix.EIO) {
		err = io.EOF
	}
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fifoSink writes into a client FIFO; extra is a read handle of our own so
// the FIFO keeps a reader when the client is gone (no EPIPE; the output
// waits in the pipe for the next `attach`).
type fifoSink struct {
	w, extra  *os.File
	closeOnce sync.Once
	closeErr  error
}

func (s *fifoSink) Write(b []byte) (int, error) { return s.w.Write(b) }

// CloseWrite closes our write end: the output is over.
func (s *fifoSink) CloseWrite() error {
	s.closeOnce.Do(func() { s.closeErr = s.w.Close() })
	return s.closeErr
}

func (s *fifoSink) Close() error {
	err := s.CloseWrite()
	s.extra.Close()
	return err
}

// openSink opens an output path: a FIFO, or else a file to append to.
func openSink(path string) (io.WriteCloser, error) {
	if path == "" {
		return nil, nil
	}
	if u, err := url.Parse(path); err == nil && u.Scheme == "fifo" {
		path = u.Path
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open stdio %s: %w", path, err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		return openAppend(path)
	}
	// The read handle first: then opening for writing cannot block.
	extra, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo %s: %w", path, err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		extra.Close()
		return nil, fmt.Errorf("open fifo %s: %w", path, err)
	}
	return &fifoSink{w: w, extra: extra}, nil
}

func openAppend(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open stdio file %s: %w", path, err)
	}
	return f, nil
}

// pipes is the runc.IO of a non-terminal process: the child ends go to runc
// (or /dev/null where the client gave no path), the other ends stay here.
type pipes struct {
	stdinR, stdinW *os.File
	outR, outW     *os.File
	errR, errW     *os.File
	devnull        *os.File
}

func newPipes(in, out, errOut bool, uid, gid int) (_ *pipes, retErr error) {
	p := &pipes{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	var err error
	if p.devnull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
		return nil, err
	}
	if in {
		if p.stdinR, p.stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	if out {
		if p.outR, p.outW, err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	if errOut {
		if p.errR, p.errW, err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	if uid != 0 || gid != 0 {
		for _, f := range []*os.File{p.stdinR, p.outW, p.errW} {
			if f != nil {
				if err := f.Chown(uid, gid); err != nil {
					return nil, fmt.Errorf("chown stdio pipe: %w", err)
				}
			}
		}
	}
	return p, nil
}

func (p *pipes) Stdin() io.WriteCloser { return p.stdinW }
func (p *pipes) Stdout() io.ReadCloser { return p.outR }
func (p *pipes) Stderr() io.ReadCloser { return p.errR }
func (p *pipes) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.devnull, p.devnull, p.devnull
	if p.stdinR != nil {
		cmd.Stdin = p.stdinR
	}
	if p.outW != nil {
		cmd.Stdout = p.outW
	}
	if p.errW != nil {
		cmd.Stderr = p.errW
	}
}

// CloseAfterStart closes the ends the process now holds.
func (p *pipes) CloseAfterStart() error {
	for _, f := range []*os.File{p.stdinR, p.outW, p.errW, p.devnull} {
		if f != nil {
			f.Close()
		}
	}
	return nil
}

func (p *pipes) Close() error {
	for _, f := range []*os.File{p.stdinR, p.stdinW, p.outR, p.outW, p.errR, p.errW, p.devnull} {
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// logger is a binary:// logging process: it reads the process's stdout on
// fd 3 and stderr on fd 4, and closes (or writes to) fd 5 once ready.
type logger struct {
	cmd            *exec.Cmd
	exited         chan runc.Exit
	stdout, stderr *os.File
	r              *reaper
}

func startLogger(ctx context.Context, r *reaper, u *url.URL, id, ns string) (*logger, error) {
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		for _, f := range []*os.File{outR, outW, errR, errW} {
			f.Close()
		}
		return nil, err
	}
	defer readyR.Close()
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	ec, err := r.Start(cmd)
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		return nil, fmt.Errorf("start logging binary %s: %w", u.Path, err)
	}
	lg := &logger{cmd: cmd, exited: ec, stdout: outW, stderr: errW, r: r}
	_ = readyR.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := readyR.Read(b[:]); err != nil && err != io.EOF {
		lg.stdout.Close()
		lg.stderr.Close()
		_ = cmd.Process.Kill()
		lg.wait()
		return nil, fmt.Errorf("logging binary %s did not become ready: %w", u.Path, err)
	}
	log.G(ctx).WithField("binary", u.Path).Debug("logging binary ready")
	return lg, nil
}

// wait gives the logger time to drain after its pipes were closed.
func (lg *logger) wait() {
	select {
	case <-lg.exited:
	case <-time.After(10 * time.Second):
		_ = lg.cmd.Process.Kill()
		<-lg.exited
	}
	_ = lg.cmd.Wait()
}
