// Package namespaces serves containerd.services.namespaces.v1.Namespaces, a
// thin edge over the metadata namespace store. Changes are published as
// /namespaces/* events after they are committed.
package namespaces

import (
	"context"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/namespaces"
	eventtypes "github.com/containerd/containerd/api/events"
	api "github.com/containerd/containerd/api/services/namespaces/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Service answers the Namespaces API.
type Service struct {
	api.UnimplementedNamespacesServer
	store     *metadata.Namespaces
	publisher events.Publisher
}

// New returns the service.
func New(store *metadata.Namespaces, p events.Publisher) *Service {
	return &Service{store: store, publisher: p}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterNamespacesServer(g, s) }

// Get returns a namespace's labels; an unknown namespace has none (as in
// containerd 1.6, which dockerd relies on).
func (s *Service) Get(ctx context.Context, req *api.GetNamespaceRequest) (*api.GetNamespaceResponse, error) {
	l, err := s.store.Labels(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &api.GetNamespaceResponse{Namespace: &api.Namespace{Name: req.Name, Labels: l}}, nil
}

// List returns every namespace with its labels.
func (s *Service) List(ctx context.Context, req *api.ListNamespacesRequest) (*api.ListNamespacesResponse, error) {
	names, err := s.store.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.ListNamespacesResponse{}
	for _, n := range names {
		l, err := s.store.Labels(ctx, n)
		if err != nil {
			return nil, err
		}
		resp.Namespaces = append(resp.Namespaces, &api.Namespace{Name: n, Labels: l})
	}
	return resp, nil
}

// Create makes a namespace.
func (s *Service) Create(ctx context.Context, req *api.CreateNamespaceRequest) (*api.CreateNamespaceResponse, error) {
	ns := req.GetNamespace()
	if err := s.store.Create(ctx, ns.GetName(), ns.GetLabels()); err != nil {
		return nil, err
	}
	s.publish(ctx, ns.Name, "/namespaces/create", &eventtypes.NamespaceCreate{Name: ns.Name, Labels: ns.Labels})
	return &api.CreateNamespaceResponse{Namespace: ns}, nil
}

// Update changes labels, honouring the field mask (labels, labels.<key>).
func (s *Service) Update(ctx context.Context, req *api.UpdateNamespaceRequest) (*api.UpdateNamespaceResponse, error) {
	ns := req.GetNamespace()
	l, err := s.store.Update(ctx, ns.GetName(), ns.GetLabels(), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	s.publish(ctx, ns.Name, "/namespaces/update", &eventtypes.NamespaceUpdate{Name: ns.Name, Labels: l})
	return &api.UpdateNamespaceResponse{Namespace: &api.Namespace{Name: ns.Name, Labels: l}}, nil
}

// Delete removes an empty namespace.
func (s *Service) Delete(ctx context.Context, req *api.DeleteNamespaceRequest) (*emptypb.Empty, error) {
	if err := s.store.Delete(ctx, req.Name); err != nil {
		return nil, err
	}
	s.publish(ctx, req.Name, "/namespaces/delete", &eventtypes.NamespaceDelete{Name: req.Name})
	return &emptypb.Empty{}, nil
}

// publish announces a committed change. Like containerd, the envelope
// carries the caller's namespace; a caller that sent none gets the name of
// the namespace concerned. A failure to publish does not undo the change and
// is not the client's error.
func (s *Service) publish(ctx context.Context, ns, topic string, ev any) {
	if _, ok := namespaces.Namespace(ctx); !ok {
		ctx = namespaces.WithNamespace(ctx, ns)
	}
	_ = s.publisher.Publish(ctx, topic, ev)
}
