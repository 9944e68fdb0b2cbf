package archive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Compression is the compression of a layer stream, detected by its magic.
type Compression int

const (
	// Uncompressed is a plain tar (or anything without a known magic).
	Uncompressed Compression = iota
	// Gzip is RFC 1952 gzip, possibly multi-member.
	Gzip
	// Zstd is a zstd stream, possibly starting with skippable frames.
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	default:
		return "uncompressed"
	}
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	// bzip2BlockMagic follows the level digit: without it a plain tar whose
	// first name starts with "BZh" would be refused.
	bzip2BlockMagic = []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}
)

// DetectCompression names the compression whose magic starts b.
func DetectCompression(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, magicGzip):
		return Gzip
	case bytes.HasPrefix(b, magicZstd):
		return Zstd
	case len(b) >= 4 && b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18:
		// A zstd skippable frame (magic 0x184D2A5?, little endian).
		return Zstd
	}
	return Uncompressed
}

// readBufferSize is how much of the compressed (or plain) input is read at a
// time.
const readBufferSize = 256 << 10

// Decompress returns the decompressed stream of r, choosing gzip, zstd or
// none by the magic bytes at its start. xz and bzip2 are recognised and
// refused with errdefs.ErrNotImplemented, as containerd does without
// external helpers. Closing the result releases the decompressor, never r.
//
// A gzip stream of at least IgzipMinSize (when r tells its size, as an
// io.SectionReader does) is inflated by ISA-L's igzip when it is
// installed, and in process when igzip cannot be started: see igzip.
// Either way, gzip members follow one another until one is followed by
// anything but a gzip header, which ends the stream (as igzip and unpigz
// treat it; the layer's own digest covers those bytes).
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, readBufferSize)
	magic, err := br.Peek(10)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, fmt.Errorf("read layer magic: %w", err)
	}
	switch DetectCompression(magic) {
	case Gzip:
		if sz, ok := r.(interface{ Size() int64 }); ok && sz.Size() >= IgzipMinSize {
			if path := igzipPath(); path != "" {
				z, err := startIgzip(path, br)
				if err == nil {
					return z, nil
				}
				// nothing has read br yet
				igzipFailed.Do(func() {
					log.L.WithError(err).Warn("igzip could not be started; inflating gzip layers in process")
				})
			}
		}
		return newGunzip(br)
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	switch {
	case bytes.HasPrefix(magic, magicXz):
		return nil, fmt.Errorf("xz compressed layer: %w", errdefs.ErrNotImplemented)
	case bytes.HasPrefix(magic, magicBzip2) && len(magic) == 10 && bytes.Equal(magic[4:], bzip2BlockMagic):
		return nil, fmt.Errorf("bzip2 compressed layer: %w", errdefs.ErrNotImplemented)
	}
	return io.NopCloser(br), nil
}

// IgzipMinSize is the compressed size from which a gzip layer goes to
// igzip: below it, starting a process costs more than it saves.
const IgzipMinSize = 1 << 20

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
// helper runs with an empty environment and, when berth runs as root, as
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
	cmd.Stderr = &limitedWriter{w: &z.stderr, n: 4 << 10}
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
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if k := min(len(p), l.n); k > 0 {
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// gunzip inflates gzip members one after another in process, and ends
// the stream at the first one followed by anything but a gzip header.
type gunzip struct {
	br *bufio.Reader
	zr *gzip.Reader
}

func newGunzip(br *bufio.Reader) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	zr.Multistream(false)
	return &gunzip{br: br, zr: zr}, nil
}

func (g *gunzip) Read(p []byte) (int, error) {
	for {
		n, err := g.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		// the end of a member: another one, or the end of the stream
		if next, _ := g.br.Peek(1); len(next) == 0 || next[0] != magicGzip[0] {
			return n, io.EOF
		}
		if err := g.zr.Reset(g.br); err != nil {
			return n, fmt.Errorf("gzip layer: next member: %w", err)
		}
		g.zr.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
}

func (g *gunzip) Close() error { return g.zr.Close() }
