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

	"github.com/klauspost/compress/gzip"
)

// requireIgzip: scripts/setup.sh installs igzip (package isal); in CI its
// absence fails the test instead of skipping it.
func requireIgzip(t *testing.T) {
	t.Helper()
	if igzipPath() == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("igzip is not installed (Debian package isal; scripts/setup.sh installs it)")
		}
		t.Skip("igzip is not installed (Debian package isal)")
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// Big gzip streams go through igzip, with the Go inflater's results:
// the same bytes, several members, and errors for a truncated stream or
// a bad checksum.
func TestDecompressIgzip(t *testing.T) {
	requireIgzip(t)
	rng := rand.New(rand.NewSource(1))
	raw := make([]byte, 3<<20) // random: compresses to more than IgzipMinSize
	rng.Read(raw)
	one := gzipped(t, raw)
	two := append(gzipped(t, raw[:2<<20]), gzipped(t, raw[2<<20:])...)
	badCRC := bytes.Clone(one)
	badCRC[len(badCRC)-8] ^= 0xff
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr string
	}{
		{"one member", one, raw, ""},
		{"two members", two, raw, ""},
		{"trailing garbage", append(bytes.Clone(one), "not gzip"...), raw, ""},
		{"truncated", one[:len(one)/2], nil, "igzip"},
		{"bad checksum", badCRC, nil, "igzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := Decompress(io.NewSectionReader(bytes.NewReader(tc.in), 0, int64(len(tc.in))))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := rc.(*igzip); !ok {
				t.Fatalf("decompressor %T, want igzip for %d bytes", rc, len(tc.in))
			}
			got, err := io.ReadAll(rc)
			if cerr := rc.Close(); cerr != nil {
				t.Errorf("close: %v", cerr)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("read: %v, want an error naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %d bytes, want the %d raw bytes", len(got), len(tc.want))
			}
		})
	}
	// small or unsized streams stay in process
	small := gzipped(t, raw[:1000])
	for _, r := range []io.Reader{io.NewSectionReader(bytes.NewReader(small), 0, int64(len(small))), bytes.NewBuffer(one)} {
		rc, err := Decompress(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rc.(*igzip); ok {
			t.Errorf("%T of a small or unsized stream went to igzip", r)
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
