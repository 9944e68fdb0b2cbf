package labels

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		k, v string
		ok   bool
	}{
		{"small", "a", "b", true},
		{"exact limit", strings.Repeat("k", 96), strings.Repeat("v", 4000), true},
		{"over limit", strings.Repeat("k", 97), strings.Repeat("v", 4000), false},
		{"empty key", "", "v", false},
		{"empty value", "k", "", true},
	} {
		err := Validate(tc.k, tc.v)
		if tc.ok != (err == nil) || (!tc.ok && !errdefs.IsInvalidArgument(err)) {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
}
