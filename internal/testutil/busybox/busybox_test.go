package busybox

import (
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestLayerDeterministic: the package promises stable digests.
func TestLayerDeterministic(t *testing.T) {
	testutil.RequireBinary(t, "busybox")
	_, first, err := Layer()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, d, _ := Layer(); d != first {
			t.Fatalf("layer digest changed between builds: %s then %s", first, d)
		}
	}
}
