package identifiers

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"default", true},
		{"foo.bar-baz_1", true},
		{strings.Repeat("a", 76), true},
		{"", false},
		{strings.Repeat("a", 77), false},
		{"../x", false},
		{"a/b", false},
		{".hidden", false},
		{"a..b", false},
		{"trailing-", false},
		{"sp ace", false},
		{"ünicode", false},
		{"a\x00b", false},
	} {
		err := Validate(tc.in)
		if tc.ok && err != nil {
			t.Errorf("Validate(%q) = %v, want nil", tc.in, err)
		}
		if !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("Validate(%q) = %v, want InvalidArgument", tc.in, err)
		}
	}
}
