// Package containers serves containerd.services.containers.v1.Containers, a
// thin edge over the metadata container store. Changes are published as
// /containers/* events after they are committed.
package containers

import (
	"context"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	eventtypes "github.com/containerd/containerd/api/events"
	api "github.com/containerd/containerd/api/services/containers/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service answers the Containers API.
type Service struct {
	api.UnimplementedContainersServer
	store     *metadata.Containers
	publisher events.Publisher
}

// New returns the service.
func New(store *metadata.Containers, p events.Publisher) *Service {
	return &Service{store: store, publisher: p}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterContainersServer(g, s) }

// Get returns one container.
func (s *Service) Get(ctx context.Context, req *api.GetContainerRequest) (*api.GetContainerResponse, error) {
	c, err := s.store.Get(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	return &api.GetContainerResponse{Container: toProto(&c)}, nil
}

// List returns the containers matching any filter.
func (s *Service) List(ctx context.Context, req *api.ListContainersRequest) (*api.ListContainersResponse, error) {
	cs, err := s.store.List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.ListContainersResponse{Containers: make([]*api.Container, 0, len(cs))}
	for i := range cs {
		resp.Containers = append(resp.Containers, toProto(&cs[i]))
	}
	return resp, nil
}

// ListStream sends the containers matching any filter one message each.
func (s *Service) ListStream(req *api.ListContainersRequest, stream api.Containers_ListStreamServer) error {
	cs, err := s.store.List(stream.Context(), req.Filters...)
	if err != nil {
		return err
	}
	for i := range cs {
		if err := stream.Send(&api.ListContainerMessage{Container: toProto(&cs[i])}); err != nil {
			return err
		}
	}
	return nil
}

// Create stores a container; the server sets its timestamps.
func (s *Service) Create(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	c, err := s.store.Create(ctx, fromProto(req.GetContainer()))
	if err != nil {
		return nil, err
	}
	_ = s.publisher.Publish(ctx, "/containers/create", &eventtypes.ContainerCreate{
		ID:      c.ID,
		Image:   c.Image,
		Runtime: &eventtypes.ContainerCreate_Runtime{Name: c.Runtime.Name, Options: c.Runtime.Options},
	})
	return &api.CreateContainerResponse{Container: toProto(&c)}, nil
}

// Update changes the fields named by the mask.
func (s *Service) Update(ctx context.Context, req *api.UpdateContainerRequest) (*api.UpdateContainerResponse, error) {
	c, err := s.store.Update(ctx, fromProto(req.GetContainer()), req.GetUpdateMask().GetPaths()...)
	if err != nil {
		return nil, err
	}
	_ = s.publisher.Publish(ctx, "/containers/update", &eventtypes.ContainerUpdate{
		ID:          c.ID,
		Image:       c.Image,
		Labels:      c.Labels,
		SnapshotKey: c.SnapshotKey,
	})
	return &api.UpdateContainerResponse{Container: toProto(&c)}, nil
}

// Delete removes a container record.
func (s *Service) Delete(ctx context.Context, req *api.DeleteContainerRequest) (*emptypb.Empty, error) {
	if err := s.store.Delete(ctx, req.ID); err != nil {
		return nil, err
	}
	_ = s.publisher.Publish(ctx, "/containers/delete", &eventtypes.ContainerDelete{ID: req.ID})
	return &emptypb.Empty{}, nil
}

func toProto(c *metadata.Container) *api.Container {
	return &api.Container{
		ID:          c.ID,
		Labels:      c.Labels,
		Image:       c.Image,
		Runtime:     &api.Container_Runtime{Name: c.Runtime.Name, Options: c.Runtime.Options},
		Spec:        c.Spec,
		Snapshotter: c.Snapshotter,
		SnapshotKey: c.SnapshotKey,
		CreatedAt:   timestamppb.New(c.CreatedAt),
		UpdatedAt:   timestamppb.New(c.UpdatedAt),
		Extensions:  c.Extensions,
		Sandbox:     c.Sandbox,
	}
}

// fromProto ignores the client's timestamps: ctr 1.6 sends Go's zero time.
func fromProto(c *api.Container) metadata.Container {
	return metadata.Container{
		ID:          c.GetID(),
		Labels:      c.GetLabels(),
		Image:       c.GetImage(),
		Runtime:     metadata.Runtime{Name: c.GetRuntime().GetName(), Options: c.GetRuntime().GetOptions()},
		Spec:        c.GetSpec(),
		Snapshotter: c.GetSnapshotter(),
		SnapshotKey: c.GetSnapshotKey(),
		Extensions:  c.GetExtensions(),
		Sandbox:     c.GetSandbox(),
	}
}
