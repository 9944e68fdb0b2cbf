package overlay

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/testsuite"
	"github.com/berth-dev/berth/internal/testutil"
)

func TestOverlay(t *testing.T) {
	testutil.RequireRoot(t)
	b, _ := os.ReadFile("/proc/filesystems")
	testutil.Require(t, strings.Contains(string(b), "\toverlay\n"), "overlayfs in /proc/filesystems")
	if err := Supported(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	testsuite.Run(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, error) {
		return New(root)
	})
}
