package shim

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	namespaceHeader  = "containerd-namespace-ttrpc"
	forwardTimeout   = 5 * time.Second
	maxEventAttempts = 2 * time.Minute // how long one event is retried before it is dropped
	maxQueuedEvents  = 4096
	// eventsIdleTimeout is how long the connection to the daemon stays
	// open without events.
	eventsIdleTimeout = 5 * time.Second
)

// publisher forwards task events to the daemon's ttrpc Events service in
// the order they were published. publish never blocks; a single goroutine
// dials lazily, sends, and redials with backoff while the daemon is away.
type publisher struct {
	ns      string
	address string

	mu      sync.Mutex
	queue   []*types.Envelope
	closing bool
	kick    chan struct{} // a new event or close

	client *ttrpc.Client
	done   chan struct{}
}

func newPublisher(address, ns string) *publisher {
	p := &publisher{ns: ns, address: address, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	go p.run()
	return p
}

// publish queues an event for topic.
func (p *publisher) publish(ctx context.Context, topic string, ev proto.Message) {
	value, err := proto.Marshal(ev)
	if err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Error("marshal event")
		return
	}
	env := &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: p.ns,
		Topic:     topic,
		Event:     &anypb.Any{TypeUrl: string(proto.MessageName(ev)), Value: value},
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) >= maxQueuedEvents {
		log.G(ctx).WithField("topic", p.queue[0].Topic).Warn("event queue full: dropping the oldest event")
		p.queue = p.queue[1:]
	}
	p.queue = append(p.queue, env)
	p.wake()
}

func (p *publisher) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// close flushes the queue for at most timeout and stops the sender.
func (p *publisher) close(timeout time.Duration) {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.wake()
	select {
	case <-p.done:
	case <-time.After(timeout):
	}
}

func (p *publisher) run() {
	defer close(p.done)
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			closing := p.closing
			p.mu.Unlock()
			if closing {
				p.disconnect()
				return
			}
			// Idle: wait for an event; drop the connection after a while,
			// its goroutines and buffers are worth more than a redial.
			idle.Reset(eventsIdleTimeout)
			select {
			case <-p.kick:
			case <-idle.C:
				p.disconnect()
				<-p.kick
			}
			idle.Stop()
			continue
		}
		env := p.queue[0]
		p.mu.Unlock()

		p.send(env)

		p.mu.Lock()
		p.queue = p.queue[1:]
		if len(p.queue) == 0 {
			p.queue = nil // let the backing array go
		}
		p.mu.Unlock()
	}
}

func (p *publisher) disconnect() {
	if p.client != nil {
		p.client.Close()
		p.client = nil
	}
}

// send forwards one envelope, retrying transport failures with backoff.
func (p *publisher) send(env *types.Envelope) {
	deadline := time.Now().Add(maxEventAttempts)
	backoff := 50 * time.Millisecond
	for {
		err := p.forward(env)
		if err == nil {
			return
		}
		if !retryable(err) || time.Now().After(deadline) {
			log.L.WithError(err).WithField("topic", env.Topic).Warn("dropping event")
			return
		}
		p.mu.Lock()
		closing := p.closing
		p.mu.Unlock()
		if closing && backoff > time.Second {
			log.L.WithError(err).WithField("topic", env.Topic).Warn("dropping event at shutdown")
			return
		}
		time.Sleep(backoff)
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

func (p *publisher) forward(env *types.Envelope) error {
	if p.client == nil {
		if p.address == "" {
			return errors.New("no ttrpc address for events")
		}
		conn, err := net.DialTimeout("unix", p.address, forwardTimeout)
		if err != nil {
			return err
		}
		p.client = ttrpc.NewClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{namespaceHeader: []string{p.ns}})
	_, err := eventsapi.NewTTRPCEventsClient(p.client).Forward(ctx, &eventsapi.ForwardRequest{Envelope: env})
	if err != nil && retryable(err) {
		p.client.Close()
		p.client = nil
	}
	return err
}

// retryable reports whether a Forward failure is the transport's (retry)
// rather than the daemon's verdict on the event (drop).
func retryable(err error) bool {
	s, ok := status.FromError(err)
	if !ok {
		return true
	}
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}
