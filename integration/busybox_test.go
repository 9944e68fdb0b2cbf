package integration

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/internal/testutil/busybox"
)

const busyboxRef = busybox.Ref

var (
	busyboxOnce sync.Once
	busyboxTar  string
	busyboxErr  error
)

// busyboxArchive returns an OCI archive of the busybox image (built once per
// test process) that ctr and berth import as busyboxRef.
func busyboxArchive(t testing.TB) string {
	t.Helper()
	testutil.RequireBinary(t, "busybox")
	busyboxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-busybox-")
		if err != nil {
			busyboxErr = err
			return
		}
		busyboxTar = filepath.Join(dir, "busybox.tar")
		busyboxErr = busybox.WriteArchive(busyboxTar)
	})
	if busyboxErr != nil {
		t.Fatal(busyboxErr)
	}
	return busyboxTar
}
