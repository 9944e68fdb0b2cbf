package events

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/namespaces"
	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
)

// TestSlowSubscriber: a subscriber that never reads must not block the
// publisher nor delay another subscriber.
func TestSlowSubscriber(t *testing.T) {
	ex := NewExchange()
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "ns"))
	defer cancel()
	_, _ = ex.Subscribe(ctx) // never read
	fast, _ := ex.Subscribe(ctx, `topic=="/containers/create"`)
	done := make(chan struct{})
	const n = 5000
	go func() {
		for i := 0; i < n; i++ {
			if err := ex.Publish(ctx, "/containers/create", &eventtypes.ContainerCreate{ID: "c"}); err != nil {
				t.Error(err)
			}
			_ = ex.Publish(ctx, "/containers/delete", &eventtypes.ContainerDelete{ID: "c"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publisher blocked by a slow subscriber")
	}
	for i := 0; i < n; i++ {
		select {
		case env := <-fast:
			if env.Topic != "/containers/create" || env.Namespace != "ns" {
				t.Fatalf("unexpected envelope %v", env)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("fast subscriber got only %d events", i)
		}
	}
}

func TestOverflowCutsOff(t *testing.T) {
	ex := NewExchange()
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	envs, errs := ex.Subscribe(ctx)
	// publish everything before reading anything: the subscriber falls behind
	for i := 0; i < 2*MaxQueued+10; i++ {
		_ = ex.Publish(ctx, "/x", &eventtypes.ContainerDelete{ID: "c"})
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-envs:
			if !ok {
				if err := <-errs; !errdefs.IsResourceExhausted(err) {
					t.Fatalf("cut-off error %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatal("overflowing subscriber was not cut off")
		}
	}
}

func TestValidation(t *testing.T) {
	ex := NewExchange()
	if err := ex.Publish(context.Background(), "/a", &eventtypes.ContainerDelete{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("publish without namespace: %v", err)
	}
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	for _, topic := range []string{"", "a", "/", "/a//b", "/a b", "/../x"} {
		if err := ex.Publish(ctx, topic, &eventtypes.ContainerDelete{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("topic %q: %v", topic, err)
		}
	}
	_, errs := ex.Subscribe(ctx, "topic==")
	if err := <-errs; !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad filter: %v", err)
	}
}
