package integration

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
)

const busyboxRef = "docker.io/library/busybox:latest"

var (
	busyboxOnce sync.Once
	busyboxTar  string
	busyboxErr  error
)

// busyboxCommands are linked to /bin/busybox in the test image.
var busyboxCommands = []string{"sh", "echo", "ls", "sleep", "true", "cat", "ps", "readlink", "tty", "id", "env", "stat", "test", "wc"}

// busyboxLayer is a gzipped layer holding Debian's static busybox, its
// command links and the directories a container needs.
func busyboxLayer(t testing.TB) ([]byte, digest.Digest) {
	t.Helper()
	bin, err := os.ReadFile(testutil.RequireBinary(t, "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	add := func(h *tar.Header, data []byte) {
		h.ModTime, h.Format = ociEpoch, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "var"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		add(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode}, nil)
	}
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, c := range busyboxCommands {
		add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + c, Linkname: "busybox", Mode: 0o777}, nil)
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\n")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd))}, passwd)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes(), digest.FromBytes(raw.Bytes())
}

// busyboxArchive returns an OCI archive of the busybox image (built once per
// test process) that ctr and berth import as busyboxRef.
func busyboxArchive(t testing.TB) string {
	t.Helper()
	busyboxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-busybox-")
		if err != nil {
			busyboxErr = err
			return
		}
		layer, diffID := busyboxLayer(t)
		busyboxTar = filepath.Join(dir, "busybox.tar")
		writeOCIArchive(t, newOCIImage(t, layer, diffID), busyboxRef, busyboxTar)
	})
	if busyboxErr != nil {
		t.Fatal(busyboxErr)
	}
	return busyboxTar
}
