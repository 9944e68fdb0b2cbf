// Package events serves containerd.services.events.v1.Events over gRPC
// (Publish, Forward, Subscribe) and the ttrpc Events.Forward that shims use,
// over the daemon's event exchange.
package events

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/events"
	api "github.com/containerd/containerd/api/services/events/v1"
	ttrpcapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Service answers the Events API.
type Service struct {
	api.UnimplementedEventsServer
	ex *events.Exchange
}

// New returns the service over ex.
func New(ex *events.Exchange) *Service { return &Service{ex: ex} }

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterEventsServer(g, s) }

// RegisterTTRPC adds Forward to the ttrpc server.
func (s *Service) RegisterTTRPC(t *ttrpc.Server) error {
	ttrpcapi.RegisterTTRPCEventsService(t, ttrpcForwarder{s.ex})
	return nil
}

// Publish stamps and dispatches an event in the caller's namespace.
func (s *Service) Publish(ctx context.Context, req *api.PublishRequest) (*emptypb.Empty, error) {
	if req.Event == nil {
		return nil, fmt.Errorf("publish %s: event is required: %w", req.Topic, errdefs.ErrInvalidArgument)
	}
	if err := events.ValidateTopic(req.Topic); err != nil {
		return nil, err
	}
	if err := s.ex.Publish(ctx, req.Topic, typeurl.Any(req.Event)); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Forward dispatches an envelope as it is.
func (s *Service) Forward(ctx context.Context, req *api.ForwardRequest) (*emptypb.Empty, error) {
	if req.Envelope == nil {
		return nil, fmt.Errorf("forward: envelope is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.ex.Forward(ctx, req.Envelope); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Subscribe streams matching envelopes until the client goes away.
func (s *Service) Subscribe(req *api.SubscribeRequest, stream api.Events_SubscribeServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	envs, errs := s.ex.Subscribe(ctx, req.Filters...)
	for {
		select {
		case env, ok := <-envs:
			if !ok {
				if err := <-errs; err != nil {
					return err
				}
				return nil
			}
			if err := stream.Send(env); err != nil {
				return err
			}
		case err := <-errs:
			return err
		}
	}
}

type ttrpcForwarder struct{ ex *events.Exchange }

func (f ttrpcForwarder) Forward(ctx context.Context, req *ttrpcapi.ForwardRequest) (*emptypb.Empty, error) {
	if req.Envelope == nil {
		return nil, fmt.Errorf("forward: envelope is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := f.ex.Forward(ctx, req.Envelope); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}
