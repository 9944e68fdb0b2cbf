//go:build linux

package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// benchLayer is a generated image-like layer: ~4000 files in ~200
// directories, mostly small, a few large, compressible about as well as
// binaries and text are, with symlinks and hardlinks.
var benchLayer = sync.OnceValue(func() []byte {
	rng := rand.New(rand.NewSource(42))
	words := []string{"lib", "usr", "share", "locale", "func", "return", "\x00\x00\x00\x00", "\x7fELF", "main", "the", "0123456789", "static", "const"}
	content := func(n int) []byte {
		var b bytes.Buffer
		for b.Len() < n {
			if rng.Intn(7) == 0 {
				var r [16]byte
				rng.Read(r[:])
				b.Write(r[:])
			} else {
				b.WriteString(words[rng.Intn(len(words))])
			}
		}
		return b.Bytes()[:n]
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	write := func(hdr *tar.Header, body []byte) {
		hdr.ModTime = testTime
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			panic(err)
		}
		tw.Write(body)
	}
	files := 0
	for d := 0; d < 200; d++ {
		dir := fmt.Sprintf("usr/lib/pkg%03d/sub%d", d, d%7)
		if d%7 == 0 || d < 7 {
			write(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("usr/lib/pkg%03d/", d), Mode: 0o755}, nil)
		}
		write(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}, nil)
		for f := 0; f < 20; f++ {
			var size int
			switch r := rng.Intn(100); {
			case r < 70:
				size = 512 + rng.Intn(8<<10)
			case r < 99:
				size = 8<<10 + rng.Intn(120<<10)
			default:
				size = 128<<10 + rng.Intn(2<<20)
			}
			name := fmt.Sprintf("%s/file%02d.so", dir, f)
			write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(size)}, content(size))
			files++
			if f%10 == 0 {
				write(&tar.Header{Typeflag: tar.TypeSymlink, Name: name + ".1", Linkname: filepath.Base(name), Mode: 0o777}, nil)
			}
			if f == 5 {
				write(&tar.Header{Typeflag: tar.TypeLink, Name: name + ".hard", Linkname: name, Mode: 0o644}, nil)
			}
		}
	}
	tw.Close()
	return buf.Bytes()
})

var benchCompressed sync.Map // Compression → []byte

func benchInput(b *testing.B, c Compression) []byte {
	if v, ok := benchCompressed.Load(c); ok {
		return v.([]byte)
	}
	in := compress(b, c, benchLayer())
	benchCompressed.Store(c, in)
	return in
}

// BenchmarkApply applies the generated layer into a fresh directory per
// iteration. MB/s are of the uncompressed tar. Trees are removed only at
// the end: ext4 makes inode allocation slow for a while after mass
// deletions (find_inode_bit skips recently deleted inodes), which would
// measure the previous iteration's cleanup rather than the apply.
func BenchmarkApply(b *testing.B) {
	requireRoot(b)
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		b.Run(c.String(), func(b *testing.B) {
			in := benchInput(b, c)
			b.SetBytes(int64(len(benchLayer())))
			base := benchDir(b)
			b.ResetTimer()
			cpu := cpuTime()
			for i := 0; i < b.N; i++ {
				root := filepath.Join(base, fmt.Sprint(i))
				os.Mkdir(root, 0o755)
				if _, _, err := Apply(context.Background(), root, bytes.NewReader(in)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
			b.ReportMetric(float64(len(in))/(1<<20), "input-MB")
		})
	}
}

// benchDir is where benchmarks write: $BERTH_BENCH_DIR (to measure on the
// filesystem berthd will use; /tmp may be busier) or a temp dir.
func benchDir(b *testing.B) string {
	if d := os.Getenv("BERTH_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "archive-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkTarCommand is a yardstick on the same machine: GNU tar
// extracting the same layer (no digest, no whiteouts, no safety checks).
func BenchmarkTarCommand(b *testing.B) {
	requireRoot(b)
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		b.Skip("no tar")
	}
	for _, c := range []Compression{Uncompressed, Gzip} {
		b.Run(c.String(), func(b *testing.B) {
			in := benchInput(b, c)
			b.SetBytes(int64(len(benchLayer())))
			base := benchDir(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				root := filepath.Join(base, fmt.Sprint(i))
				os.Mkdir(root, 0o755)
				cmd := exec.Command(tarBin, "-x", "-p", "--same-owner", "-C", root)
				if c == Gzip {
					cmd.Args = append(cmd.Args, "-z")
				}
				cmd.Stdin = bytes.NewReader(in)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("tar: %v: %s", err, out)
				}
			}
		})
	}
}

// BenchmarkDiff writes the layer of a tree against an empty lower one.
func BenchmarkDiff(b *testing.B) {
	requireRoot(b)
	upper, lower := b.TempDir(), b.TempDir()
	if _, _, err := Apply(context.Background(), upper, bytes.NewReader(benchLayer())); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchLayer())))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Diff(context.Background(), lower, upper, discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the user and system CPU time of this process so far, in ns:
// on a shared machine it varies less than wall time.
func cpuTime() int64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkGunzip compares the gzip decoder used here with the standard
// library's, which containerd uses when unpigz is not installed.
func BenchmarkGunzip(b *testing.B) {
	in := benchInput(b, Gzip)
	for _, tc := range []struct {
		name string
		open func(io.Reader) (io.Reader, error)
	}{
		{"klauspost", func(r io.Reader) (io.Reader, error) { return Decompress(r) }},
		{"stdlib", func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(bufio.NewReader(r)) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchLayer())))
			for i := 0; i < b.N; i++ {
				r, err := tc.open(bytes.NewReader(in))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(discard{}, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
