package filters

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzParse checks that Parse never panics, that every error is
// InvalidArgument, that accepted filters Match without panicking on a few
// adaptors, and that a parsed filter printed in canonical form (describe)
// parses back to the same filter.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "name", "name==foo", "name!=foo", "name~=foo", "labels.foo,name",
		`labels."a.b"==x`, `labels.a.b`, `other=="too complex, yo"`,
		`name=="a\tb\x41\u00e9"`, `topic~=/^\/tasks\//`, `topic~=|^/tasks/|`,
		`namespace==moby,topic~=|^/tasks/|`, `x~=/\d+/`, `name == a, b`,
		`name==a b`, `name==foo,`, `a,,b`, `name==/x/`, `x~=[`, `name=='x'`,
		`image==docker.io/library/busybox:latest`, "name==\xff", `labels."\q"`,
	} {
		f.Add(s)
	}
	adaptors := []Adaptor{
		AdapterFunc(func([]string) (string, bool) { return "", false }),
		AdapterFunc(func(fp []string) (string, bool) { return strings.Join(fp, "."), true }),
		object{name: "foo", namespace: "moby", labels: map[string]string{"a.b": "x", "foo": "true"}},
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := Parse(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "filters: ") {
				t.Fatalf("Parse(%q): bad error %v", s, err)
			}
			if flt != nil {
				t.Fatalf("Parse(%q): non-nil filter with error", s)
			}
			return
		}
		for _, a := range adaptors {
			flt.Match(a)
		}
		if s == "" {
			if flt != Always {
				t.Fatalf(`Parse("") is not Always`)
			}
			return
		}
		canon := describe(flt)
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) = %s, which does not parse: %v", s, canon, err)
		}
		if got := describe(again); got != canon {
			t.Fatalf("Parse(%q) = %s, but that parses as %s", s, canon, got)
		}
		for _, a := range adaptors {
			if flt.Match(a) != again.Match(a) {
				t.Fatalf("Parse(%q) and Parse(%q) match differently", s, canon)
			}
		}
	})
}
