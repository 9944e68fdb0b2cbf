package main

// The client side of a task's standard streams, as containerd's cio does it: the client makes
// the FIFOs in a private directory, opens its ends and passes the paths in Tasks.Create or
// Tasks.Exec; the shim opens the other ends and copies between them and the process. The
// daemon never opens them.
//
//	/run/berth/fifo/<random>/      0700, made by the client
//	    <id>-stdin                  client writes (O_WRONLY|O_NONBLOCK), shim reads
//	    <id>-stdout, <id>-stderr    shim writes, client reads (O_RDONLY|O_NONBLOCK)
//
// The opens are asynchronous (containerd/fifo): each completes when the shim opens its end,
// so the client opens first and creates the task afterwards. With a terminal there is no
// stderr: the pty carries both output streams. A detached task keeps its FIFOs; the shim holds
// its ends (and an extra reader) open, so that `berth tasks attach` can reopen them later.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/fifo"
	"github.com/urfave/cli/v2"
)

// defaultFIFODir holds the FIFO directories of the tasks berth starts.
const defaultFIFODir = "/run/berth/fifo"

// fifoDirFlag is where new FIFO directories go.
func fifoDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "fifo-dir", Usage: "make the task's FIFOs in a new directory below `DIR`", Value: defaultFIFODir}
}

// fifoSet names a process's FIFOs; dir is empty for paths the client did not make (attach).
type fifoSet struct {
	dir                   string
	stdin, stdout, stderr string
	terminal              bool
}

// newFIFOSet makes a new 0700 directory below root for the FIFOs of process id (a container
// or exec ID): <id>-stdin, <id>-stdout and, without a terminal, <id>-stderr. The FIFOs
// themselves are made when they are opened. remove deletes the directory again.
func newFIFOSet(root, id string, terminal bool) (*fifoSet, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return nil, fmt.Errorf("invalid process id %q for a FIFO name", id)
	}
	if root == "" {
		root = defaultFIFODir
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("make the FIFO directory: %w (berth needs root to run tasks)", err)
	}
	dir, err := os.MkdirTemp(root, "")
	if err != nil {
		return nil, fmt.Errorf("make the FIFO directory: %w", err)
	}
	f := &fifoSet{
		dir:      dir,
		stdin:    filepath.Join(dir, id+"-stdin"),
		stdout:   filepath.Join(dir, id+"-stdout"),
		terminal: terminal,
	}
	if !terminal {
		f.stderr = filepath.Join(dir, id+"-stderr")
	}
	return f, nil
}

// remove deletes the FIFO directory the client made.
func (f *fifoSet) remove() {
	if f != nil && f.dir != "" {
		_ = os.RemoveAll(f.dir)
	}
}

// removeTaskFIFOs deletes the FIFO directory of a task that is gone, when the paths are
// FIFOs in a directory of their own below one of the usual roots (berth's, ctr's or root):
// `berth run -d` leaves them for the shim, and nobody else removes them.
func removeTaskFIFOs(root string, paths ...string) {
	var dir string
	for _, p := range paths {
		if p == "" {
			continue
		}
		p = strings.TrimPrefix(p, "fifo://")
		if !filepath.IsAbs(p) {
			return
		}
		d := filepath.Dir(p)
		if dir != "" && d != dir {
			return
		}
		dir = d
	}
	if dir == "" {
		return
	}
	parent := filepath.Dir(dir)
	known := false
	for _, r := range []string{root, defaultFIFODir, "/run/containerd/fifo"} {
		if r != "" && filepath.Clean(r) == parent {
			known = true
		}
	}
	if !known {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type()&os.ModeNamedPipe == 0 {
			return // not ours: leave it alone
		}
	}
	for _, e := range entries {
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
	_ = os.Remove(dir)
}

// processStreams are the local ends: nil ones are not connected.
type processStreams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// clientIO is the client's side of a process's FIFOs and the copies to and from them.
type clientIO struct {
	cancel context.CancelFunc
	fifos  []io.Closer
	out    sync.WaitGroup // output copies
	copied atomic.Int64   // output bytes copied so far
}

// openClientIO opens the client's ends of f (creating the FIFOs when create) and starts
// copying: streams.stdin into <id>-stdin, and <id>-stdout, <id>-stderr into streams.stdout
// and stderr. At the end of the input the client's end of <id>-stdin is closed and stdinEOF
// (if not nil) called: shims hold a writer of their own on the FIFO, so the process sees the
// end of its input only once the client asks with Tasks.CloseIO. Without a stdin stream the
// FIFO is only made, for a later attach.
func openClientIO(f *fifoSet, streams processStreams, create bool, stdinEOF func()) (_ *clientIO, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	cio := &clientIO{cancel: cancel}
	defer func() {
		if err != nil {
			cio.close()
		}
	}()
	flag := 0
	if create {
		flag = syscall.O_CREAT
	}
	if f.stdin != "" && streams.stdin != nil {
		w, err := fifo.OpenFifo(ctx, f.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK|flag, 0o700)
		if err != nil {
			return nil, fmt.Errorf("open stdin FIFO %s: %w", f.stdin, err)
		}
		cio.fifos = append(cio.fifos, w)
		go func() {
			_, _ = io.Copy(w, streams.stdin)
			w.Close()
			if stdinEOF != nil {
				stdinEOF()
			}
		}()
	} else if f.stdin != "" && create {
		if err := syscall.Mkfifo(f.stdin, 0o700); err != nil {
			return nil, fmt.Errorf("make stdin FIFO %s: %w", f.stdin, err)
		}
	}
	for _, o := range []struct {
		path string
		dst  io.Writer
	}{{f.stdout, streams.stdout}, {f.stderr, streams.stderr}} {
		if o.path == "" {
			continue
		}
		r, err := fifo.OpenFifo(ctx, o.path, syscall.O_RDONLY|syscall.O_NONBLOCK|flag, 0o700)
		if err != nil {
			return nil, fmt.Errorf("open FIFO %s: %w", o.path, err)
		}
		cio.fifos = append(cio.fifos, r)
		dst := o.dst
		if dst == nil {
			dst = io.Discard
		}
		cio.out.Add(1)
		go func() {
			defer cio.out.Done()
			_, _ = io.Copy(countingWriter{dst, &cio.copied}, r)
		}()
	}
	return cio, nil
}

// wait waits until the output has been copied: the shim closes its ends once the process
// and everything else holding its output are gone. It gives up when no output has come for
// idle: a process's child may keep the output open after the process has exited.
func (cio *clientIO) wait(idle time.Duration) {
	done := make(chan struct{})
	go func() {
		cio.out.Wait()
		close(done)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, since := cio.copied.Load(), time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			if n := cio.copied.Load(); n != last {
				last, since = n, now
			} else if now.Sub(since) >= idle {
				return
			}
		}
	}
}

// countingWriter adds the bytes written through it to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countingWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(int64(n))
	return n, err
}

// close closes the client's ends; pending opens give up.
func (cio *clientIO) close() {
	if cio == nil {
		return
	}
	cio.cancel()
	for _, f := range cio.fifos {
		f.Close()
	}
}

// localTerminal is the user's terminal in raw mode, for a task with a pty.
type localTerminal struct {
	con console.Console
}

// openLocalTerminal puts the terminal on stdin in raw mode.
func openLocalTerminal() (*localTerminal, error) {
	con, err := console.ConsoleFromFile(os.Stdin)
	if err != nil {
		return nil, errors.New("--tty needs a terminal on stdin (run berth from a terminal, or drop -t)")
	}
	if err := con.SetRaw(); err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	return &localTerminal{con: con}, nil
}

// reset restores the terminal's mode.
func (t *localTerminal) reset() {
	if t != nil {
		_ = t.con.Reset()
	}
}

// size is the terminal's window size; 0×0 when unknown.
func (t *localTerminal) size() (width, height uint32) {
	ws, err := t.con.Size()
	if err != nil {
		return 0, 0
	}
	return uint32(ws.Width), uint32(ws.Height)
}

// watchResize calls resize with the window size now and after every SIGWINCH until stop.
func (t *localTerminal) watchResize(resize func(width, height uint32)) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if w, h := t.size(); w > 0 && h > 0 {
				resize(w, h)
			}
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// forwardedSignals are passed on to the task while berth waits for it. SIGCHLD, SIGPIPE,
// SIGWINCH, SIGURG and job control are berth's own.
var forwardedSignals = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM,
}

// signalForwarder passes berth's signals on to a task. Signals are caught from newSignal-
// Forwarder on and held until start: one that comes while the task is being started is
// not lost.
type signalForwarder struct {
	ch   chan os.Signal
	done chan struct{}
	wg   sync.WaitGroup
}

func newSignalForwarder() *signalForwarder {
	f := &signalForwarder{ch: make(chan os.Signal, 16), done: make(chan struct{})}
	signal.Notify(f.ch, forwardedSignals...)
	return f
}

// start calls kill with every signal caught, until stop.
func (f *signalForwarder) start(kill func(syscall.Signal)) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			select {
			case s := <-f.ch:
				if sig, ok := s.(syscall.Signal); ok {
					kill(sig)
				}
			case <-f.done:
				return
			}
		}
	}()
}

// stop ends the forwarding; signals are berth's again.
func (f *signalForwarder) stop() {
	signal.Stop(f.ch)
	close(f.done)
	f.wg.Wait()
}
