// Package images serves containerd.services.images.v1.Images, a thin edge
// over the metadata image store. Changes are published as /images/* events
// after they are committed; deletions are reported to the garbage
// collector, which a synchronous delete waits for.
package images

import (
	"context"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	eventtypes "github.com/containerd/containerd/api/events"
	api "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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

// Service answers the Images API.
type Service struct {
	api.UnimplementedImagesServer
	store     *metadata.Images
	publisher events.Publisher
	gc        Collector
}

// New returns the service. gc may be nil: deletions then only remove the
// record.
func New(store *metadata.Images, p events.Publisher, gc Collector) *Service {
	return &Service{store: store, publisher: p, gc: gc}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterImagesServer(g, s) }

// Get returns one image.
func (s *Service) Get(ctx context.Context, req *api.GetImageRequest) (*api.GetImageResponse, error) {
	img, err := s.store.Get(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return &api.GetImageResponse{Image: toProto(&img)}, nil
}

// List returns the images matching any filter.
func (s *Service) List(ctx context.Context, req *api.ListImagesRequest) (*api.ListImagesResponse, error) {
	imgs, err := s.store.List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.ListImagesResponse{Images: make([]*api.Image, 0, len(imgs))}
	for i := range imgs {
		resp.Images = append(resp.Images, toProto(&imgs[i]))
	}
	return resp, nil
}

// Create stores an image; the server sets its timestamps.
func (s *Service) Create(ctx context.Context, req *api.CreateImageRequest) (*api.CreateImageResponse, error) {
	img, err := s.store.Create(ctx, fromProto(req.GetImage()))
	if err != nil {
		return nil, err
	}
	s.publish(ctx, "/images/create", &eventtypes.ImageCreate{Name: img.Name, Labels: img.Labels})
	return &api.CreateImageResponse{Image: toProto(&img)}, nil
}

// Update changes the fields named by the mask; NotFound if the image does
// not exist (clients then create it).
func (s *Service) Update(ctx context.Context, req *api.UpdateImageRequest) (*api.UpdateImageResponse, error) {
	img, err := s.store.Update(ctx, fromProto(req.GetImage()), req.GetUpdateMask().GetPaths()...)
	if err != nil {
		return nil, err
	}
	s.publish(ctx, "/images/update", &eventtypes.ImageUpdate{Name: img.Name, Labels: img.Labels})
	return &api.UpdateImageResponse{Image: toProto(&img)}, nil
}

// Delete removes an image (only if its target matches, when the request
// names one) and, with sync, waits for the garbage collector.
func (s *Service) Delete(ctx context.Context, req *api.DeleteImageRequest) (*emptypb.Empty, error) {
	if err := s.store.Delete(ctx, req.Name, digest.Digest(req.GetTarget().GetDigest())); err != nil {
		return nil, err
	}
	s.publish(ctx, "/images/delete", &eventtypes.ImageDelete{Name: req.Name})
	if s.gc != nil {
		if err := s.gc.Deleted(ctx, req.Sync); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// publish announces a committed change; a failure does not undo it and is
// not the client's error.
func (s *Service) publish(ctx context.Context, topic string, ev any) {
	if err := s.publisher.Publish(ctx, topic, ev); err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Warn("publishing event")
	}
}

func toProto(img *metadata.Image) *api.Image {
	return &api.Image{
		Name:   img.Name,
		Labels: img.Labels,
		Target: &types.Descriptor{
			MediaType:   img.Target.MediaType,
			Digest:      img.Target.Digest.String(),
			Size:        img.Target.Size,
			Annotations: img.Target.Annotations,
		},
		CreatedAt: timestamppb.New(img.CreatedAt),
		UpdatedAt: timestamppb.New(img.UpdatedAt),
	}
}

// fromProto ignores the client's timestamps: ctr 1.6 sends Go's zero time.
func fromProto(img *api.Image) metadata.Image {
	t := img.GetTarget()
	return metadata.Image{
		Name:   img.GetName(),
		Labels: img.GetLabels(),
		Target: ocispec.Descriptor{
			MediaType:   t.GetMediaType(),
			Digest:      digest.Digest(t.GetDigest()),
			Size:        t.GetSize(),
			Annotations: t.GetAnnotations(),
		},
	}
}
