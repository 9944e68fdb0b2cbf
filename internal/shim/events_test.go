package shim

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

type fakeEvents struct {
	mu     sync.Mutex
	topics []string
	ns     []string
	types  []string
}

func (f *fakeEvents) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	md, _ := ttrpc.GetMetadata(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topics = append(f.topics, r.Envelope.Topic)
	f.ns = append(f.ns, md[namespaceHeader]...)
	f.types = append(f.types, r.Envelope.Event.TypeUrl)
	return &emptypb.Empty{}, nil
}

func serveFakeEvents(t *testing.T, path string) *fakeEvents {
	t.Helper()
	f := &fakeEvents{}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterTTRPCEventsService(srv, f)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background(), l) }()
	t.Cleanup(func() { srv.Close() })
	return f
}

// Events published while the daemon is away arrive, in order, once it
// listens.
func TestPublisherRetriesInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock.ttrpc")
	p := newPublisher(path, "ns1")
	ctx := context.Background()
	p.publish(ctx, "/tasks/create", &events.TaskCreate{ContainerID: "c"})
	p.publish(ctx, "/tasks/start", &events.TaskStart{ContainerID: "c"})
	time.Sleep(300 * time.Millisecond)
	f := serveFakeEvents(t, path)
	p.publish(ctx, "/tasks/exit", &events.TaskExit{ContainerID: "c"})
	p.publish(ctx, "/tasks/delete", &events.TaskDelete{ContainerID: "c"})
	p.close(10 * time.Second)

	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if !slices.Equal(f.topics, want) {
		t.Fatalf("forwarded %q, want %q", f.topics, want)
	}
	if f.ns[0] != "ns1" {
		t.Errorf("namespace metadata %q, want ns1", f.ns)
	}
	if f.types[2] != "containerd.events.TaskExit" {
		t.Errorf("event type url %q, want containerd.events.TaskExit", f.types[2])
	}
}

// publish never blocks, whatever the daemon does.
func TestPublishDoesNotBlock(t *testing.T) {
	p := newPublisher(filepath.Join(t.TempDir(), "nobody"), "ns")
	start := time.Now()
	for range 1000 {
		p.publish(context.Background(), "/tasks/oom", &events.TaskOOM{ContainerID: "c"})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("1000 publishes took %v", d)
	}
	p.close(100 * time.Millisecond)
}
