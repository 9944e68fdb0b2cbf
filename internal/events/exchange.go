// Package events is berthd's event exchange: services publish after their
// changes are committed, shims forward task events, clients subscribe with
// containerd's filter language.
//
// Invariants:
//   - Publish and Forward never block on a subscriber: each subscriber has its
//     own queue, drained by its own goroutine; a subscriber whose queue holds
//     MaxQueued events (besides the batch it is delivering, so at most about
//     2*MaxQueued in all) is cut off with ResourceExhausted instead of slowing
//     anyone else down or growing without bound;
//   - every envelope carries a valid namespace and a topic of the form
//     /a/b/..., checked before it is dispatched;
//   - events reach each subscriber in the order they were published.
package events

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	// registers the event payload types so filters can read event.<field>.
	_ "github.com/containerd/containerd/api/events"
)

// MaxQueued is how far a subscriber may fall behind before it is cut off.
const MaxQueued = 1 << 16

// Publisher is what services use to announce a committed change.
type Publisher interface {
	Publish(ctx context.Context, topic string, event any) error
}

// Exchange fans envelopes out to subscribers.
type Exchange struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

// NewExchange returns an exchange with no subscribers.
func NewExchange() *Exchange { return &Exchange{subs: map[*subscriber]struct{}{}} }

// Publish packs event (a protobuf message) into an envelope stamped now with
// the namespace of ctx, and dispatches it.
func (e *Exchange) Publish(ctx context.Context, topic string, event any) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	a, err := typeurl.MarshalAny(event)
	if err != nil {
		return fmt.Errorf("publish %s: %v: %w", topic, err, errdefs.ErrInvalidArgument)
	}
	return e.Forward(ctx, &types.Envelope{
		Timestamp: timestamppb.New(time.Now()),
		Namespace: ns,
		Topic:     topic,
		Event:     &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()},
	})
}

// Forward dispatches an envelope made elsewhere (a shim, another publisher).
func (e *Exchange) Forward(ctx context.Context, env *types.Envelope) error {
	if err := identifiers.Validate(env.GetNamespace()); err != nil {
		return fmt.Errorf("event namespace: %w", err)
	}
	if err := ValidateTopic(env.GetTopic()); err != nil {
		return err
	}
	if env.Event == nil {
		return fmt.Errorf("event on %s has no payload: %w", env.Topic, errdefs.ErrInvalidArgument)
	}
	if env.Timestamp == nil {
		env.Timestamp = timestamppb.Now()
	}
	e.mu.Lock()
	for s := range e.subs {
		s.enqueue(env)
	}
	e.mu.Unlock()
	return nil
}

// Subscribe returns the envelopes matching any of fs, published from now
// until ctx is done. The error channel receives at most one error; both
// channels are closed when the subscription ends.
func (e *Exchange) Subscribe(ctx context.Context, fs ...string) (<-chan *types.Envelope, <-chan error) {
	out := make(chan *types.Envelope)
	errc := make(chan error, 1)
	f, err := filters.ParseAll(fs...)
	if err != nil {
		errc <- err
		close(out)
		close(errc)
		return out, errc
	}
	s := &subscriber{wake: make(chan struct{}, 1)}
	e.mu.Lock()
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	go func() {
		defer close(errc)
		defer close(out)
		defer func() {
			e.mu.Lock()
			delete(e.subs, s)
			e.mu.Unlock()
		}()
		for {
			batch, overflow := s.take()
			if overflow {
				errc <- fmt.Errorf("subscriber fell more than %d events behind: %w", MaxQueued, errdefs.ErrResourceExhausted)
				return
			}
			for _, env := range batch {
				if !f.Match(adapt(env)) {
					continue
				}
				select {
				case out <- env:
				case <-ctx.Done():
					return
				}
			}
			if len(batch) > 0 {
				continue
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errc
}

type subscriber struct {
	mu       sync.Mutex
	queue    []*types.Envelope
	overflow bool
	wake     chan struct{}
}

func (s *subscriber) enqueue(env *types.Envelope) {
	s.mu.Lock()
	if len(s.queue) >= MaxQueued {
		s.overflow = true
	} else {
		s.queue = append(s.queue, env)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) take() ([]*types.Envelope, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q, s.overflow
}

// adapt exposes an envelope to the filter language: namespace, topic and
// event.<field> of the decoded payload.
func adapt(env *types.Envelope) filters.Adaptor {
	var decoded any
	var tried bool
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		if len(fp) == 0 {
			return "", false
		}
		switch fp[0] {
		case "namespace":
			return env.Namespace, len(env.Namespace) > 0
		case "topic":
			return env.Topic, len(env.Topic) > 0
		case "event":
			if !tried {
				tried = true
				decoded, _ = typeurl.UnmarshalAny(env.Event)
			}
			if f, ok := decoded.(interface {
				Field([]string) (string, bool)
			}); ok {
				return f.Field(fp[1:])
			}
		}
		return "", false
	})
}

// ValidateTopic accepts topics such as /containers/create: a leading slash
// and identifier components.
func ValidateTopic(topic string) error {
	if !strings.HasPrefix(topic, "/") || len(topic) < 2 {
		return fmt.Errorf("event topic %q must start with /: %w", topic, errdefs.ErrInvalidArgument)
	}
	for _, part := range strings.Split(topic[1:], "/") {
		if err := identifiers.Validate(part); err != nil {
			return fmt.Errorf("event topic %q: %w", topic, err)
		}
	}
	return nil
}
