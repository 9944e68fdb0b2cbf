// Package snapshots serves containerd.services.snapshots.v1.Snapshots: a
// thin edge over the namespaced snapshot stores, one per snapshotter.
// Changes are published as /snapshot/* events after they are committed.
package snapshots

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/berth-dev/berth/internal/snapshots"
	eventtypes "github.com/containerd/containerd/api/events"
	api "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultSnapshotterLabel on a namespace names its default snapshotter.
const DefaultSnapshotterLabel = "containerd.io/defaults/snapshotter"

// Service answers the Snapshots API.
type Service struct {
	api.UnimplementedSnapshotsServer
	stores     map[string]*metadata.SnapshotStore
	namespaces *metadata.Namespaces
	fallback   string
	publisher  events.Publisher
}

// New returns the service; fallback is the snapshotter used when a request
// names none and the namespace has no default label.
func New(stores map[string]*metadata.SnapshotStore, ns *metadata.Namespaces, fallback string, p events.Publisher) *Service {
	return &Service{stores: stores, namespaces: ns, fallback: fallback, publisher: p}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterSnapshotsServer(g, s) }

// Store returns the snapshotter a request names, or the namespace's default.
func (s *Service) Store(ctx context.Context, name string) (*metadata.SnapshotStore, error) {
	if name == "" {
		name = s.fallback
		if ns, ok := namespaces.Namespace(ctx); ok {
			if l, err := s.namespaces.Labels(ctx, ns); err == nil && l[DefaultSnapshotterLabel] != "" {
				name = l[DefaultSnapshotterLabel]
			}
		}
	}
	st, ok := s.stores[name]
	if !ok {
		return nil, fmt.Errorf("snapshotter %q is not loaded (see `ctr plugins ls`): %w", name, errdefs.ErrNotFound)
	}
	return st, nil
}

func (s *Service) publish(ctx context.Context, topic string, ev any) {
	_ = s.publisher.Publish(ctx, topic, ev)
}

// Prepare makes an active snapshot and returns its mounts.
func (s *Service) Prepare(ctx context.Context, req *api.PrepareSnapshotRequest) (*api.PrepareSnapshotResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	ms, err := st.Prepare(ctx, req.Key, req.Parent, snapshots.WithLabels(req.Labels))
	if err != nil {
		return nil, err
	}
	s.publish(ctx, "/snapshot/prepare", &eventtypes.SnapshotPrepare{Key: req.Key, Parent: req.Parent, Snapshotter: st.Name()})
	return &api.PrepareSnapshotResponse{Mounts: mount.ToProto(ms)}, nil
}

// View makes a read-only snapshot and returns its mounts.
func (s *Service) View(ctx context.Context, req *api.ViewSnapshotRequest) (*api.ViewSnapshotResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	ms, err := st.View(ctx, req.Key, req.Parent, snapshots.WithLabels(req.Labels))
	if err != nil {
		return nil, err
	}
	return &api.ViewSnapshotResponse{Mounts: mount.ToProto(ms)}, nil
}

// Mounts returns the mounts of an active or view snapshot.
func (s *Service) Mounts(ctx context.Context, req *api.MountsRequest) (*api.MountsResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	ms, err := st.Mounts(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &api.MountsResponse{Mounts: mount.ToProto(ms)}, nil
}

// Commit commits an active snapshot under a name.
func (s *Service) Commit(ctx context.Context, req *api.CommitSnapshotRequest) (*emptypb.Empty, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := st.Commit(ctx, req.Name, req.Key, snapshots.WithLabels(req.Labels)); err != nil {
		return nil, err
	}
	s.publish(ctx, "/snapshot/commit", &eventtypes.SnapshotCommit{Key: req.Key, Name: req.Name, Snapshotter: st.Name()})
	return &emptypb.Empty{}, nil
}

// Remove removes a snapshot without children.
func (s *Service) Remove(ctx context.Context, req *api.RemoveSnapshotRequest) (*emptypb.Empty, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := st.Remove(ctx, req.Key); err != nil {
		return nil, err
	}
	s.publish(ctx, "/snapshot/remove", &eventtypes.SnapshotRemove{Key: req.Key, Snapshotter: st.Name()})
	return &emptypb.Empty{}, nil
}

// Stat returns a snapshot's info.
func (s *Service) Stat(ctx context.Context, req *api.StatSnapshotRequest) (*api.StatSnapshotResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	info, err := st.Stat(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &api.StatSnapshotResponse{Info: toProto(info)}, nil
}

// Update changes a snapshot's labels.
func (s *Service) Update(ctx context.Context, req *api.UpdateSnapshotRequest) (*api.UpdateSnapshotResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	info, err := st.Update(ctx, snapshots.Info{Name: req.GetInfo().GetName(), Labels: req.GetInfo().GetLabels()}, req.GetUpdateMask().GetPaths()...)
	if err != nil {
		return nil, err
	}
	return &api.UpdateSnapshotResponse{Info: toProto(info)}, nil
}

// List streams the snapshots matching any filter, in batches.
func (s *Service) List(req *api.ListSnapshotsRequest, stream api.Snapshots_ListServer) error {
	ctx := stream.Context()
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return err
	}
	var batch []*api.Info
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := stream.Send(&api.ListSnapshotsResponse{Info: batch})
		batch = nil
		return err
	}
	err = st.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		batch = append(batch, toProto(info))
		if len(batch) == 100 {
			return flush()
		}
		return nil
	}, req.Filters...)
	if err != nil {
		return err
	}
	return flush()
}

// Usage returns a snapshot's disk usage.
func (s *Service) Usage(ctx context.Context, req *api.UsageRequest) (*api.UsageResponse, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	u, err := st.Usage(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &api.UsageResponse{Inodes: u.Inodes, Size: u.Size}, nil
}

// Cleanup removes what the snapshotter holds that no snapshot refers to.
func (s *Service) Cleanup(ctx context.Context, req *api.CleanupRequest) (*emptypb.Empty, error) {
	st, err := s.Store(ctx, req.Snapshotter)
	if err != nil {
		return nil, err
	}
	if err := st.Cleanup(ctx); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func toProto(info snapshots.Info) *api.Info {
	return &api.Info{
		Name: info.Name, Parent: info.Parent, Kind: api.Kind(info.Kind), Labels: info.Labels,
		CreatedAt: timestamppb.New(info.Created), UpdatedAt: timestamppb.New(info.Updated),
	}
}
