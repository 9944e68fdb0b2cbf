package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/typeurl/v2"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	// Registers runc's runtime options, so that containers' runtime options decode.
	_ "github.com/containerd/containerd/api/types/runc/options"
)

// jsonFlag selects JSON output; it is global and repeated on every command that prints.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}
}

// quietFlag makes listings print only identifiers.
func quietFlag() cli.Flag {
	return &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the identifiers"}
}

// wantJSON reports whether --json was given to the command or to berth itself.
func wantJSON(c *cli.Context) bool {
	for _, x := range c.Lineage() {
		if x.Bool("json") {
			return true
		}
	}
	return false
}

// table writes aligned columns; empty cells print as "-".
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	out := make([]string, len(cells))
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		out[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(out, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine writes v as JSON on one line.
func printJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// protoJSON renders a protobuf message as compact JSON with the proto field names; messages
// holding Any values of unknown types fall back to encoding/json.
func protoJSON(m proto.Message) json.RawMessage {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		if b, err = json.Marshal(m); err != nil {
			return json.RawMessage("null")
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil { // protojson varies its spacing on purpose
		return b
	}
	return buf.Bytes()
}

// anyJSON renders an Any: JSON payloads (OCI specs, processes) as they are, registered
// protobuf types (events, runc options) decoded, anything else as its type URL and bytes.
func anyJSON(a *anypb.Any) json.RawMessage {
	if a == nil {
		return nil
	}
	if v := a.GetValue(); len(v) > 0 && (v[0] == '{' || v[0] == '[') && json.Valid(v) {
		return json.RawMessage(v)
	}
	if v, err := typeurl.UnmarshalAny(a); err == nil {
		if m, ok := v.(proto.Message); ok {
			return protoJSON(m)
		}
		if b, err := json.Marshal(v); err == nil {
			return b
		}
	}
	b, _ := json.Marshal(struct {
		TypeURL string `json:"type_url"`
		Value   []byte `json:"value"`
	}{a.GetTypeUrl(), a.GetValue()})
	return b
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatLabels joins labels as "k=v,k=v", sorted by key.
func formatLabels(labels map[string]string) string {
	keys := sortedKeys(labels)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// timeLayout is RFC 3339 with all nine digits of nanoseconds, so that columns line up.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// formatTime renders a protobuf timestamp in UTC with timeLayout; unset (nil or Go's zero
// time, which containerd's 1.6 clients send) is "".
func formatTime(ts *timestamppb.Timestamp) string {
	if t := jsonTime(ts); t != nil {
		return t.Format(timeLayout)
	}
	return ""
}

// jsonTime is a timestamp for JSON views: nil when unset.
func jsonTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime().UTC()
	if t.IsZero() {
		return nil
	}
	return &t
}
