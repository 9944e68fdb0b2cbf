package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// blobFiles lists the blob files of berthd's content store.
func blobFiles(t *testing.T, d *testutil.Daemon) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.Root, "io.containerd.content.v1.content", "blobs", "sha256"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestCtrImageRemoveCollects: after `ctr images rm --sync` the blob files of
// the image are gone, but blobs another image still needs stay.
func TestCtrImageRemoveCollects(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	tarA, _ := buildOCIArchive(t, map[string][]byte{"etc/a": []byte("first image")}, "example.com/a:1")
	tarB, _ := buildOCIArchive(t, map[string][]byte{"etc/b": []byte("second image")}, "example.com/b:1")
	if out, err := d.Ctr("-n", "gc", "images", "import", "--no-unpack", tarA); err != nil {
		t.Fatalf("import a: %v\n%s", err, out)
	}
	onlyA := blobFiles(t, d)
	if out, err := d.Ctr("-n", "gc", "images", "import", "--no-unpack", tarB); err != nil {
		t.Fatalf("import b: %v\n%s", err, out)
	}
	both := blobFiles(t, d)
	if len(onlyA) == 0 || len(both) <= len(onlyA) {
		t.Fatalf("blobs after imports: %d then %d", len(onlyA), len(both))
	}
	if out, err := d.Ctr("-n", "gc", "images", "rm", "--sync", "example.com/a:1"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	left := blobFiles(t, d)
	have := map[string]bool{}
	for _, b := range left {
		have[b] = true
	}
	inB := map[string]bool{}
	for _, b := range both {
		inB[b] = true
	}
	for _, b := range onlyA {
		delete(inB, b)
	}
	for b := range inB {
		if !have[b] {
			t.Errorf("blob %s of the remaining image was collected", b)
		}
	}
	if len(left) != len(both)-len(onlyA) {
		t.Errorf("blob files after rm --sync: %d, want %d (the first image's are gone)", len(left), len(both)-len(onlyA))
	}
	out, _ := d.Ctr("-n", "gc", "content", "ls")
	if strings.Count(out, "sha256:") != len(left) {
		t.Errorf("content ls lists %d blobs, disk has %d:\n%s", strings.Count(out, "sha256:"), len(left), out)
	}
	// without --sync the collection follows shortly after
	if out, err := d.Ctr("-n", "gc", "images", "rm", "example.com/b:1"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(blobFiles(t, d)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("blobs left after the last image was removed: %v", blobFiles(t, d))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
