package native

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/testsuite"
)

func TestNative(t *testing.T) {
	testsuite.Run(t, "native", func(ctx context.Context, root string) (snapshots.Snapshotter, error) {
		return New(root)
	})
}
