package archive

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/klauspost/compress/gzip"
)

// requireIgzip: scripts/setup.sh installs igzip (package isal).
func requireIgzip(t *testing.T) {
	t.Helper()
	testutil.Require(t, igzipPath() != "", "igzip 2.30 or later (Debian package isal)")
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// Gzip streams of a known size of 1 MiB or more go to igzip; small or
// unsized ones stay in process.
func TestDecompressChoosesIgzip(t *testing.T) {
	requireIgzip(t)
	raw := make([]byte, 3<<20) // random: compresses to more than igzipMinSize
	rand.New(rand.NewSource(1)).Read(raw)
	big, small := gzipped(t, raw), gzipped(t, raw[:1000])
	for _, tc := range []struct {
		name  string
		r     io.Reader
		igzip bool
	}{
		{"big, sized", io.NewSectionReader(bytes.NewReader(big), 0, int64(len(big))), true},
		{"small, sized", io.NewSectionReader(bytes.NewReader(small), 0, int64(len(small))), false},
		{"big, unsized", bytes.NewBuffer(big), false},
	} {
		rc, err := Decompress(tc.r)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rc.(*igzip); ok != tc.igzip {
			t.Errorf("%s: decompressor %T", tc.name, rc)
		}
		rc.Close()
	}
}

// Closed half-way, igzip is stopped and reaped; run by root, it runs as
// nobody.
func TestDecompressIgzipCloseAndCredentials(t *testing.T) {
	requireIgzip(t)
	raw := make([]byte, 16<<20)
	rand.New(rand.NewSource(2)).Read(raw)
	in := gzipped(t, raw)
	rc, err := Decompress(io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))))
	if err != nil {
		t.Fatal(err)
	}
	z := rc.(*igzip)
	if _, err := io.ReadFull(rc, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", z.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(status), "\n") {
			if (strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:")) && strings.Fields(l)[1] != "65534" {
				t.Errorf("igzip runs with %q, want 65534 (nobody)", l)
			}
			if strings.HasPrefix(l, "Groups:") && len(strings.Fields(l)) > 1 {
				t.Errorf("igzip keeps supplementary groups: %q", l)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- rc.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if z.cmd.ProcessState == nil {
		t.Error("igzip was not reaped by Close")
	}
}

// Both inflaters read gzip members one after another and stop at the
// first member followed by something else; a stream cut short or with a
// bad checksum is an error in both, also through Apply's read-ahead.
func TestGzipMembersAndTrailingDataAlike(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	big := make([]byte, 2<<20)
	rng.Read(big)
	for _, size := range []int{1000, len(big)} { // in process, then igzip
		if size >= igzipMinSize {
			requireIgzip(t)
		}
		raw := big[:size]
		one := gzipped(t, raw)
		badCRC := bytes.Clone(one)
		badCRC[len(badCRC)-8] ^= 0xff
		for _, tc := range []struct {
			name string
			in   []byte
			want []byte // nil: an error
		}{
			{"one member", one, raw},
			{"two members", append(gzipped(t, raw[:size/2]), gzipped(t, raw[size/2:])...), raw},
			{"trailing zeros", append(bytes.Clone(one), make([]byte, 1024)...), raw},
			{"trailing text", append(bytes.Clone(one), "not gzip"...), raw},
			{"trailing 0x1f, then not gzip", append(bytes.Clone(one), "\x1fxyz"...), raw},
			{"trailer cut", one[:len(one)-8], nil},
			{"half way", one[:len(one)/2], nil},
			{"bad checksum", badCRC, nil},
			{"half a second header", append(bytes.Clone(one), one[:5]...), nil},
		} {
			t.Run(fmt.Sprintf("%d/%s", size, tc.name), func(t *testing.T) {
				rc, err := Decompress(io.NewSectionReader(bytes.NewReader(tc.in), 0, int64(len(tc.in))))
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if _, isIgzip := rc.(*igzip); isIgzip != (len(tc.in) >= igzipMinSize) {
					t.Fatalf("decompressor %T for %d bytes", rc, len(tc.in))
				}
				ra := newReadahead(rc)
				defer ra.Close()
				got, err := io.ReadAll(ra)
				switch {
				case tc.want == nil && err == nil:
					t.Fatalf("read %d bytes and no error, want an error", len(got))
				case tc.want != nil && err != nil:
					t.Fatal(err)
				case tc.want != nil && !bytes.Equal(got, tc.want):
					t.Fatalf("got %d bytes, want the %d raw bytes", len(got), len(tc.want))
				}
			})
		}
	}
}

// When igzip cannot be started, gzip layers are inflated in process.
func TestDecompressFallsBackWhenIgzipFails(t *testing.T) {
	old := igzipPath
	igzipPath = func() string { return "/nonexistent/igzip" }
	defer func() { igzipPath = old }()
	raw := make([]byte, 2<<20)
	rand.New(rand.NewSource(4)).Read(raw)
	in := gzipped(t, raw)
	rc, err := Decompress(io.NewSectionReader(bytes.NewReader(in), 0, int64(len(in))))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*gunzip); !ok {
		t.Fatalf("decompressor %T, want the in-process one", rc)
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}

func TestIgzipVersionOK(t *testing.T) {
	for out, want := range map[string]bool{
		"igzip command line interface 2.30.0\n": true,
		"igzip command line interface 2.31.1":   true,
		"igzip command line interface 3.0.0":    true,
		"igzip command line interface 2.29.0":   false,
		"igzip command line interface 2.3.0":    false,
		"":                                      false,
		"igzip command line interface":          false,
	} {
		if got := igzipVersionOK(out); got != want {
			t.Errorf("igzipVersionOK(%q) = %v, want %v", out, got, want)
		}
	}
}
