package integration

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestBerthImportUnpacks: `berth images import` unpacks (with progress) so
// that ctr runs the image straight away; --no-unpack stores content only.
func TestBerthImportUnpacks(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	out, err := d.Berth("-n", "plain", "images", "import", "--no-unpack", busyboxArchive(t))
	if err != nil {
		t.Fatalf("import --no-unpack: %v\n%s", err, out)
	}
	if out, _ := d.Ctr("-n", "plain", "snapshots", "ls"); strings.Contains(out, "sha256:") {
		t.Errorf("--no-unpack made snapshots:\n%s", out)
	}
	out, err = d.Berth("-n", "unpacked", "images", "import", busyboxArchive(t))
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	mustContain(t, out, "unpacking layer 1/1", "imported "+busyboxRef)
	out, _ = d.Ctr("-n", "unpacked", "snapshots", "ls")
	if !strings.Contains(out, "Committed") {
		t.Fatalf("no committed snapshot after berth import:\n%s", out)
	}
	// a second import finds the layer unpacked
	out, err = d.Berth("-n", "unpacked", "images", "import", busyboxArchive(t))
	if err != nil || strings.Contains(out, "unpacking layer") {
		t.Errorf("re-import unpacked again: %v\n%s", err, out)
	}
	// the config holds the snapshot for GC
	out, _ = d.Ctr("-n", "unpacked", "content", "ls")
	mustContain(t, out, "containerd.io/gc.ref.snapshot.overlayfs=sha256:")
	out, err = d.Ctr("-n", "unpacked", "run", "--rm", busyboxRef, "u1", "echo", "unpacked by berth")
	if err != nil || strings.TrimSpace(out) != "unpacked by berth" {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	// and GC keeps the snapshot while the image lives, removes it after
	if _, err := d.Ctr("-n", "unpacked", "leases", "ls"); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	d.Start() // start-up collection
	if out, _ := d.Ctr("-n", "unpacked", "snapshots", "ls"); !strings.Contains(out, "Committed") {
		t.Fatalf("GC removed the snapshot of a live image:\n%s", out)
	}
	if out, err := d.Berth("-n", "unpacked", "images", "rm", "--sync", busyboxRef); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if out, _ := d.Ctr("-n", "unpacked", "snapshots", "ls"); strings.Contains(out, "sha256:") {
		t.Errorf("snapshots left after images rm --sync:\n%s", out)
	}
}
