package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	digest "github.com/opencontainers/go-digest"
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

// TestCtrImageRemoveCollects: after `ctr images rm --sync` exactly the
// blobs of the images left remain on disk; without sync, the collection at
// the next start-up frees the rest.
func TestCtrImageRemoveCollects(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	tarA, _ := buildOCIArchive(t, map[string][]byte{"etc/a": []byte("first image")}, "example.com/a:1")
	tarB, _ := buildOCIArchive(t, map[string][]byte{"etc/b": []byte("second image")}, "example.com/b:1")
	for _, tar := range []string{tarA, tarB} {
		if out, err := d.Ctr("-n", "gc", "images", "import", "--no-unpack", tar); err != nil {
			t.Fatalf("import: %v\n%s", err, out)
		}
	}
	blobsB := ociArchiveBlobs(t, tarB)
	if n := len(blobFiles(t, d)); n < 2*len(blobsB) {
		t.Fatalf("only %d blob files after two imports", n)
	}
	if out, err := d.Ctr("-n", "gc", "images", "rm", "--sync", "example.com/a:1"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	// left: the remaining image's manifest, config and layer; its
	// index.json blob is referenced by nothing once the import ended.
	left := blobFiles(t, d)
	if len(left) != len(blobsB)-1 {
		t.Errorf("blob files after rm --sync: %v, want exactly the %d of the remaining image", left, len(blobsB)-1)
	}
	for _, f := range left {
		if _, ok := blobsB[digest.NewDigestFromEncoded(digest.SHA256, f)]; !ok {
			t.Errorf("blob %s left, not one of the remaining image's", f)
		}
	}
	out, _ := d.Ctr("-n", "gc", "content", "ls", "-q")
	if n := len(strings.Fields(out)); n != len(left) {
		t.Errorf("content ls lists %d blobs, disk has %d:\n%s", n, len(left), out)
	}
	// without sync: freed by the collection that runs after a restart
	if out, err := d.Ctr("-n", "gc", "images", "rm", "example.com/b:1"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if len(blobFiles(t, d)) == 0 {
		t.Errorf("a delete without sync collected at once (containerd collects lazily)")
	}
	d.Stop()
	d.Start()
	deadline := time.Now().Add(10 * time.Second)
	for len(blobFiles(t, d)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("blobs left after restart: %v", blobFiles(t, d))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
