package integration

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestDiskFull: berthd's root fills up during an import. The import fails
// saying so, nothing of the image is visible (no blob, no image), berthd
// keeps serving, and once the interrupted ingest is aborted the space is
// back: a smaller image imports and unpacks.
func TestDiskFull(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	d.Stop()
	if err := unix.Mount("tmpfs", d.Root, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Skipf("no tmpfs for a small root: %v", err)
	}
	t.Cleanup(func() {
		d.Stop() // before its root goes
		_ = unix.Unmount(d.Root, unix.MNT_DETACH)
	})
	d.Start()
	t.Cleanup(func() { cleanTasks(t, d, "default") })

	// a layer of 24 MB of random data (gzip cannot shrink it)
	layer, diffID := ociLayer(t, map[string][]byte{"big": randomBytes(24<<20, 7)})
	img := newOCIImage(t, layer, diffID)
	big := img.Layers[0].Digest
	archive := filepath.Join(t.TempDir(), "big.tar")
	writeOCIArchive(t, img, "example.com/big:1", archive)

	out, err := d.Ctr("images", "import", "--no-unpack", archive)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("import onto a full disk: %v\n%s", err, out)
	}
	if ls := ctrOK(t, d, "content", "ls"); strings.Contains(ls, big.String()) {
		t.Errorf("the layer is listed after the failed import:\n%s", ls)
	}
	if ls := ctrOK(t, d, "images", "ls"); strings.Contains(ls, "example.com/big") {
		t.Errorf("the image is listed after the failed import:\n%s", ls)
	}
	if slices.Contains(blobFiles(t, d), big.Encoded()) {
		t.Errorf("the layer's blob file exists after the failed import")
	}

	// abort what the import left; then the space is there again
	cc := contentapi.NewContentClient(d.Conn(t))
	ctx := nsCtx(t, "default")
	st, err := cc.ListStatuses(ctx, &contentapi.ListStatusesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Statuses {
		if _, err := cc.Abort(ctx, &contentapi.AbortRequest{Ref: s.Ref}); err != nil {
			t.Errorf("abort %s: %v", s.Ref, err)
		}
	}
	out = ctrOK(t, d, "images", "import", busyboxArchive(t))
	mustContain(t, out, "unpacking", "done")

	// a layer that fits but does not unpack: 40 MB of zeros
	layer, diffID = ctrZeros(t)
	img = newOCIImage(t, layer, diffID)
	writeOCIArchive(t, img, "example.com/zeros:1", archive)
	var before, after unix.Statfs_t
	if err := unix.Statfs(d.Root, &before); err != nil {
		t.Fatal(err)
	}
	out, err = d.Ctr("images", "import", archive)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("unpack onto a full disk: %v\n%s", err, out)
	}
	// the client removed its half-applied snapshot; nothing of it stays
	if ls := ctrOK(t, d, "snapshots", "ls"); strings.Contains(ls, "Active") {
		t.Errorf("an active snapshot is left after the failed unpack:\n%s", ls)
	}
	if err := unix.Statfs(d.Root, &after); err != nil {
		t.Fatal(err)
	}
	if free, was := after.Bfree*uint64(after.Bsize), before.Bfree*uint64(before.Bsize); free+1<<20 < was {
		t.Errorf("free space %d after the failed unpack, %d before it", free, was)
	}
	out = ctrOK(t, d, "run", "--rm", busyboxRef, "after-full", "echo", "still runs")
	mustContain(t, out, "still runs")
}

// ctrZeros is a gzip layer holding 40 MB of zeros: small to store, large
// to unpack.
func ctrZeros(t *testing.T) ([]byte, digest.Digest) {
	return ociLayer(t, map[string][]byte{"zeros": make([]byte, 40<<20)})
}
