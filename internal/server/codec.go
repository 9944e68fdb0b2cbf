package server

import (
	"fmt"
	"sync"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// writeDataField is the number of WriteContentRequest's data field.
const writeDataField = 6

// codec is gRPC's proto codec, except for one message: a
// WriteContentRequest is decoded into the capacity that its Data field
// already has, so that a handler that receives every message of a stream
// into one request (Content.Write) reuses one buffer instead of allocating
// a fresh one per message. Clients send 1 MiB per WRITE; a fresh MiB per
// message cost more in page faults and garbage collection than the rest of
// the decoding. Every other message, and every field but data, is decoded
// by the proto codec itself, with its checks.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2("proto")} }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*contentapi.WriteContentRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return unmarshalWrite(buf.ReadOnlyData(), m)
}

// unmarshalWrite decodes b into m as proto.Unmarshal does (m is reset
// first; the last data field wins), copying data into m.Data's capacity.
func unmarshalWrite(b []byte, m *contentapi.WriteContentRequest) error {
	keep := m.Data[:0]
	if cap(keep) > maxKeptData {
		keep = nil // one huge message does not pin its size for the stream
	}
	proto.Reset(m)
	var rest []byte // every field but data, for proto to decode
	var payload []byte
	hasData := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decoding WriteContentRequest: %w", protowire.ParseError(n))
		}
		k := protowire.ConsumeFieldValue(num, typ, b[n:])
		if k < 0 {
			return fmt.Errorf("decoding WriteContentRequest: %w", protowire.ParseError(k))
		}
		if num == writeDataField && typ == protowire.BytesType {
			payload, _ = protowire.ConsumeBytes(b[n:])
			hasData = true
		} else {
			rest = append(rest, b[:n+k]...)
		}
		b = b[n+k:]
	}
	if len(rest) > 0 {
		if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(rest, m); err != nil {
			return err
		}
	}
	if hasData {
		m.Data = append(keep, payload...)
	} else {
		m.Data = keep // a STAT or COMMIT in between keeps the buffer
	}
	return nil
}

// maxKeptData bounds the buffer kept between messages: above the usual
// 1 MiB writes, a message's buffer goes with it.
const maxKeptData = 2 << 20

// Marshal is the proto codec's, except that a large reply (a List of many
// containers or images) is marshalled into a buffer kept between calls:
// gRPC's own pool is emptied by every collection, and a fresh buffer of
// megabytes comes back from the system zeroed, page by page, which cost a
// List at one client more CPU than building the reply.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	size := proto.Size(m)
	if size < minKeptReply || size > maxKeptReply {
		return c.CodecV2.Marshal(v)
	}
	buf := replies.Get(size)
	if _, err := (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend((*buf)[:0], m); err != nil {
		replies.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, replies)}, nil
}

// The replies whose buffers are kept: from 256 KiB to 8 MiB.
const (
	minKeptReply = 256 << 10
	maxKeptReply = 8 << 20
)

// replies keeps up to two freed reply buffers; the idle trimmer drops them.
var replies = &keptBuffers{max: 2}

// keptBuffers is a mem.BufferPool that keeps a few buffers across garbage
// collections.
type keptBuffers struct {
	mu   sync.Mutex
	max  int
	free []*[]byte
}

// Get returns a buffer of length n, a kept one if one is large enough.
func (p *keptBuffers) Get(n int) *[]byte {
	p.mu.Lock()
	for i, b := range p.free {
		if cap(*b) >= n {
			p.free = append(p.free[:i], p.free[i+1:]...)
			p.mu.Unlock()
			*b = (*b)[:n]
			return b
		}
	}
	p.mu.Unlock()
	b := make([]byte, n)
	return &b
}

// Put keeps b unless enough buffers are kept already.
func (p *keptBuffers) Put(b *[]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < p.max && cap(*b) <= maxKeptReply {
		p.free = append(p.free, b)
	}
}

// drop lets the kept buffers go and says how many there were.
func (p *keptBuffers) drop() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free)
	p.free = nil
	return n
}
