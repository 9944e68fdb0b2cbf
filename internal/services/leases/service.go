// Package leases serves containerd.services.leases.v1.Leases, a thin edge
// over the metadata lease store. Deleting a lease is reported to the
// garbage collector, which a synchronous delete waits for.
package leases

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/metadata"
	api "github.com/containerd/containerd/api/services/leases/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Collector is the garbage collector as the service sees it. Deleted is
// called after a deletion was committed; when wait is set (the client's
// sync flag) it returns only once a collection has run.
type Collector interface {
	Deleted(ctx context.Context, wait bool) error
}

// Service answers the Leases API.
type Service struct {
	api.UnimplementedLeasesServer
	store *metadata.Leases
	gc    Collector
}

// New returns the service. gc may be nil: deleting a lease then only
// removes the record.
func New(store *metadata.Leases, gc Collector) *Service {
	return &Service{store: store, gc: gc}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterLeasesServer(g, s) }

// Create makes a lease, with a generated ID when the request has none.
func (s *Service) Create(ctx context.Context, req *api.CreateRequest) (*api.CreateResponse, error) {
	id := req.ID
	if id == "" {
		id = randomID()
	}
	l, err := s.store.Create(ctx, metadata.Lease{ID: id, Labels: req.Labels})
	if err != nil {
		return nil, err
	}
	return &api.CreateResponse{Lease: toProto(&l)}, nil
}

// randomID makes an ID the way containerd's WithRandomID does:
// "<nanoseconds>-<4 base64 characters>".
func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%d-%s", time.Now().Nanosecond(), base64.URLEncoding.EncodeToString(b[:]))
}

// Delete removes a lease and, with sync, waits for the garbage collector.
func (s *Service) Delete(ctx context.Context, req *api.DeleteRequest) (*emptypb.Empty, error) {
	if err := s.store.Delete(ctx, req.ID); err != nil {
		return nil, err
	}
	if s.gc != nil {
		if err := s.gc.Deleted(ctx, req.Sync); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// List returns the leases matching any filter.
func (s *Service) List(ctx context.Context, req *api.ListRequest) (*api.ListResponse, error) {
	ls, err := s.store.List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.ListResponse{Leases: make([]*api.Lease, 0, len(ls))}
	for i := range ls {
		resp.Leases = append(resp.Leases, toProto(&ls[i]))
	}
	return resp, nil
}

// AddResource makes a lease hold a resource.
func (s *Service) AddResource(ctx context.Context, req *api.AddResourceRequest) (*emptypb.Empty, error) {
	if err := s.store.AddResource(ctx, req.ID, resourceFromProto(req.Resource)); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// DeleteResource makes a lease release a resource.
func (s *Service) DeleteResource(ctx context.Context, req *api.DeleteResourceRequest) (*emptypb.Empty, error) {
	if err := s.store.DeleteResource(ctx, req.ID, resourceFromProto(req.Resource)); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ListResources returns what a lease holds.
func (s *Service) ListResources(ctx context.Context, req *api.ListResourcesRequest) (*api.ListResourcesResponse, error) {
	rs, err := s.store.ListResources(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	resp := &api.ListResourcesResponse{Resources: make([]*api.Resource, 0, len(rs))}
	for _, r := range rs {
		resp.Resources = append(resp.Resources, &api.Resource{ID: r.ID, Type: r.Type})
	}
	return resp, nil
}

func resourceFromProto(r *api.Resource) metadata.LeaseResource {
	return metadata.LeaseResource{ID: r.GetID(), Type: r.GetType()}
}

func toProto(l *metadata.Lease) *api.Lease {
	return &api.Lease{ID: l.ID, CreatedAt: timestamppb.New(l.CreatedAt), Labels: l.Labels}
}
