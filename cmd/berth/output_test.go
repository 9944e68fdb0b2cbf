package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/events"
	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/typeurl/v2"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestTable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header []string
		rows   [][]string
		want   string
	}{
		{
			name:   "aligned",
			header: []string{"CONTAINER", "IMAGE", "RUNTIME"},
			rows: [][]string{
				{"a", "docker.io/library/busybox:latest", "io.containerd.runc.v2"},
				{"long-container-id", "x", "y"},
			},
			want: "CONTAINER           IMAGE                              RUNTIME\n" +
				"a                   docker.io/library/busybox:latest   io.containerd.runc.v2\n" +
				"long-container-id   x                                  y\n",
		},
		{
			name:   "empty cells print a dash",
			header: []string{"NAME", "LABELS"},
			rows:   [][]string{{"default", ""}},
			want:   "NAME      LABELS\ndefault   -\n",
		},
		{
			name:   "tabs and newlines cannot break columns",
			header: []string{"A", "B"},
			rows:   [][]string{{"x\ty", "1\n2"}},
			want:   "A     B\nx y   1 2\n",
		},
		{
			name:   "header only",
			header: []string{"TYPE", "ID"},
			want:   "TYPE   ID\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tb := newTable(&b, tc.header...)
			for _, r := range tc.rows {
				tb.row(r...)
			}
			if err := tb.flush(); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
}

func TestFormatLabels(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"b": "2", "a": "1"}, "a=1,b=2"},
		{map[string]string{"k": ""}, "k="},
	} {
		if got := formatLabels(tc.labels); got != tc.want {
			t.Errorf("formatLabels(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func TestPrintJSON(t *testing.T) {
	var b bytes.Buffer
	if err := printJSON(&b, []namespaceView{{Name: "a<b", Labels: map[string]string{"x": "y"}}}); err != nil {
		t.Fatal(err)
	}
	want := "[\n  {\n    \"name\": \"a<b\",\n    \"labels\": {\n      \"x\": \"y\"\n    }\n  }\n]\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	b.Reset()
	if err := printJSONLine(&b, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "{\"a\":1}\n" {
		t.Errorf("printJSONLine: got %q", b.String())
	}
}

func mustAny(t *testing.T, v any) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAnyJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *anypb.Any
		want string
	}{
		{"nil", nil, ""},
		{
			name: "OCI spec stays JSON",
			in:   &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", Value: []byte(`{"ociVersion":"1.1.0"}`)},
			want: `{"ociVersion":"1.1.0"}`,
		},
		{
			name: "registered event decodes with proto field names",
			in:   mustAny(t, &events.ContainerUpdate{ID: "c", SnapshotKey: "k", Labels: map[string]string{"a": "b"}}),
			want: `{"id":"c","labels":{"a":"b"},"snapshot_key":"k"}`,
		},
		{
			name: "unknown type shows its URL and bytes",
			in:   &anypb.Any{TypeUrl: "example.com/Unknown", Value: []byte{1, 2}},
			want: `{"type_url":"example.com/Unknown","value":"AQI="}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(anyJSON(tc.in)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestProtoJSONIsCompactAndStable(t *testing.T) {
	m := &events.ContainerCreate{ID: "c", Image: "img", Runtime: &events.ContainerCreate_Runtime{Name: "io.containerd.runc.v2"}}
	want := `{"id":"c","image":"img","runtime":{"name":"io.containerd.runc.v2"}}`
	for i := 0; i < 20; i++ { // protojson varies spacing at random
		if got := string(protoJSON(m)); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
}

func TestFormatTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *timestamppb.Timestamp
		want string
	}{
		{"unset", nil, ""},
		{"go zero time from 1.6 clients", &timestamppb.Timestamp{Seconds: -62135596800}, ""},
		{"fixed width", timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)), "2026-01-02T03:04:05.000000600Z"},
	} {
		if got := formatTime(tc.in); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestWriteEvent(t *testing.T) {
	env := &types.Envelope{
		Timestamp: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
		Namespace: "default",
		Topic:     "/containers/delete",
		Event:     mustAny(t, &events.ContainerDelete{ID: "c1"}),
	}
	var b bytes.Buffer
	if err := writeEvent(&b, env, false); err != nil {
		t.Fatal(err)
	}
	if want := "2026-01-02T03:04:05.000000000Z default /containers/delete {\"id\":\"c1\"}\n"; b.String() != want {
		t.Errorf("text: got %q, want %q", b.String(), want)
	}
	b.Reset()
	if err := writeEvent(&b, env, true); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("json: want one line, got %q", b.String())
	}
	var got struct {
		Timestamp time.Time
		Namespace string
		Topic     string
		Type      string
		Event     struct{ ID string }
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("json: %v: %s", err, b.String())
	}
	if got.Namespace != "default" || got.Topic != "/containers/delete" || got.Event.ID != "c1" ||
		got.Type != "containerd.events.ContainerDelete" || !got.Timestamp.Equal(env.Timestamp.AsTime()) {
		t.Errorf("json: got %+v", got)
	}
}

func TestPluginDetails(t *testing.T) {
	v := newPluginView(&introspectionapi.Plugin{
		Type:      "io.containerd.snapshotter.v1",
		ID:        "btrfs",
		Requires:  []string{"io.containerd.metadata.v1"},
		Platforms: []*types.Platform{{OS: "linux", Architecture: "amd64"}},
		Exports:   map[string]string{"root": "/r", "a": "b"},
		InitErr:   &rpcstatus.Status{Code: int32(codes.Unknown), Message: "not btrfs: skip plugin"},
	})
	var b bytes.Buffer
	printPluginDetails(&b, v)
	want := `Type:         io.containerd.snapshotter.v1
ID:           btrfs
Status:       skip
Requires:     io.containerd.metadata.v1
Platforms:    linux/amd64
Exports:      a=b
              root=/r
Error:        Unknown: not btrfs: skip plugin
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPluginStatus(t *testing.T) {
	for msg, want := range map[string]string{
		"path /x must be a btrfs filesystem: skip plugin": "skip",
		"devmapper not configured":                        "error",
	} {
		if got := pluginStatus(msg); got != want {
			t.Errorf("pluginStatus(%q) = %q, want %q", msg, got, want)
		}
	}
	p := formatPlatform(&types.Platform{OS: "linux", Architecture: "arm", Variant: "v7"})
	if p != "linux/arm/v7" {
		t.Errorf("formatPlatform = %q", p)
	}
}
