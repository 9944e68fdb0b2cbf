package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestCodecWriteContentRequest(t *testing.T) {
	big := bytes.Repeat([]byte("berth"), 300<<10)
	twoData := protowire.AppendTag(nil, writeDataField, protowire.BytesType)
	twoData = protowire.AppendBytes(twoData, []byte("first"))
	twoData = protowire.AppendTag(twoData, 2, protowire.BytesType)
	twoData = protowire.AppendString(twoData, "ref")
	twoData = protowire.AppendTag(twoData, writeDataField, protowire.BytesType)
	twoData = protowire.AppendBytes(twoData, []byte("second")) // the last one wins

	for _, tc := range []struct {
		name string
		msg  *contentapi.WriteContentRequest
		wire []byte
	}{
		{name: "stat", msg: &contentapi.WriteContentRequest{Action: contentapi.WriteAction_STAT, Ref: "r", Total: 10, Expected: "sha256:00"}},
		{name: "write", msg: &contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Offset: 5, Data: big}},
		{name: "empty", msg: &contentapi.WriteContentRequest{}},
		{name: "commit with labels", msg: &contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Data: []byte("x"), Labels: map[string]string{"a": "b", "c": ""}}},
		{name: "data twice", wire: twoData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := tc.wire
			if wire == nil {
				var err error
				if wire, err = proto.Marshal(tc.msg); err != nil {
					t.Fatal(err)
				}
			}
			want := new(contentapi.WriteContentRequest)
			if err := proto.Unmarshal(wire, want); err != nil {
				t.Fatal(err)
			}
			// a reused request, with stale fields and a buffer to fill
			got := &contentapi.WriteContentRequest{Ref: "stale", Labels: map[string]string{"old": "1"}, Data: make([]byte, 3, 1<<20)}
			buf := &got.Data[:1][0]
			if err := newCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire[:len(wire)/2]), mem.SliceBuffer(wire[len(wire)/2:])}, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded %v, want %v", got, want)
			}
			if len(want.Data) > 0 && len(want.Data) <= 1<<20 && &got.Data[0] != buf {
				t.Error("data was not decoded into the request's buffer")
			}
		})
	}
}

func TestCodecWriteContentRequestMalformed(t *testing.T) {
	wire := protowire.AppendTag(nil, writeDataField, protowire.BytesType)
	wire = protowire.AppendVarint(wire, 100) // length past the end
	wire = append(wire, "short"...)
	if err := newCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, new(contentapi.WriteContentRequest)); err == nil {
		t.Fatal("a truncated data field decoded without error")
	}
	bad := protowire.AppendTag(nil, 2, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0xff, 0xfe}) // ref is not UTF-8
	if err := newCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, new(contentapi.WriteContentRequest)); err == nil {
		t.Fatal("a ref that is not UTF-8 decoded without error")
	}
}

// A large reply is marshalled as the proto codec would, into a buffer
// that is kept and used again once gRPC has put it back.
func TestCodecMarshalLargeReply(t *testing.T) {
	resp := &containersapi.ListContainersResponse{}
	for i := range 2000 {
		resp.Containers = append(resp.Containers, &containersapi.Container{ID: fmt.Sprintf("c%04d", i), Image: strings.Repeat("x", 200)})
	}
	want, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < minKeptReply {
		t.Fatalf("test reply of %d bytes is below %d", len(want), minKeptReply)
	}
	c := newCodec()
	replies.drop()
	for i := 0; i < 2; i++ {
		got, err := c.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("round %d: the reply differs from proto.Marshal's", i)
		}
		got.Free() // gRPC's transport, once written
		if n := len(replies.free); n != 1 {
			t.Fatalf("round %d: %d buffers kept after Free, want 1", i, n)
		}
	}
	if replies.drop() != 1 || len(replies.free) != 0 {
		t.Error("drop left buffers")
	}
}
