package snapshots

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		k    Kind
		s    string
		json string
	}{
		{KindView, "View", `"View"`},
		{KindActive, "Active", `"Active"`},
		{KindCommitted, "Committed", `"Committed"`},
		{KindUnknown, "Unknown", `"Unknown"`},
	} {
		if tc.k.String() != tc.s {
			t.Errorf("%d.String() = %q", tc.k, tc.k.String())
		}
		if ParseKind(strings.ToLower(tc.s)) != tc.k || ParseKind(tc.s) != tc.k {
			t.Errorf("ParseKind(%q) = %v", tc.s, ParseKind(tc.s))
		}
		b, err := json.Marshal(tc.k)
		if err != nil || string(b) != tc.json {
			t.Errorf("json %s, %v", b, err)
		}
		var k Kind
		if err := json.Unmarshal(b, &k); err != nil || k != tc.k {
			t.Errorf("json round trip %v, %v", k, err)
		}
	}
	// containerd's numbering, which clients see in Info.kind.
	if KindView != 1 || KindActive != 2 || KindCommitted != 3 {
		t.Error("kind values differ from containerd's")
	}
}

func TestAdaptInfo(t *testing.T) {
	info := Info{Kind: KindCommitted, Name: "n", Parent: "p", Labels: map[string]string{"a.b": "c"}}
	for _, tc := range []struct {
		filter string
		match  bool
	}{
		{"kind==committed", true},
		{"kind==Committed", false},
		{"name==n,parent==p", true},
		{`labels."a.b"==c`, true},
		{"labels.a.b", true},
		{"labels.x", false},
		{"other", false},
	} {
		f, err := ParseFilters(tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(AdaptInfo(info)); got != tc.match {
			t.Errorf("%q matches: %v", tc.filter, got)
		}
	}
	if _, err := ParseFilters("name=="); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad filter: %v", err)
	}
}

func TestWithLabels(t *testing.T) {
	var info Info
	src := map[string]string{"a": "1"}
	for _, o := range []Opt{WithLabels(src), WithLabels(map[string]string{"b": "2"})} {
		if err := o(&info); err != nil {
			t.Fatal(err)
		}
	}
	if len(info.Labels) != 2 || len(src) != 1 {
		t.Errorf("labels %v, source %v", info.Labels, src)
	}
}

func TestFilterInheritedLabels(t *testing.T) {
	got := FilterInheritedLabels(map[string]string{
		"containerd.io/snapshot/remote":   "x",
		"containerd.io/snapshot.ref":      "y",
		"containerd.io/gc.root":           "z",
		"containerd.io/snapshotter/other": "w",
	})
	if len(got) != 2 || got["containerd.io/snapshot/remote"] != "x" || got["containerd.io/snapshot.ref"] != "y" {
		t.Errorf("inherited %v", got)
	}
	if FilterInheritedLabels(map[string]string{"a": "b"}) != nil {
		t.Error("want nil without inherited labels")
	}
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"", false},
		{"extract-1 sha256:abc", true},
		{strings.Repeat("k", MaxKeyLength), true},
		{strings.Repeat("k", MaxKeyLength+1), false},
	} {
		err := ValidateKey("key", tc.key)
		if (err == nil) != tc.ok || (err != nil && !errdefs.IsInvalidArgument(err)) {
			t.Errorf("ValidateKey(%.20q…): %v", tc.key, err)
		}
	}
}
