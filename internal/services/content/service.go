// Package content serves containerd.services.content.v1.Content, a thin
// edge over a content.Store (the namespaced metadata store in berthd).
// Deletions are published as /content/delete after they are committed.
//
// Write speaks containerd's bidirectional protocol (contentserver.go in
// containerd 1.6): the first message names the ref; total and expected may
// be (re)declared on any message; every reply carries the offset; STAT
// replies also the digest so far, the start and update times and the
// total; a WRITE at an offset other than the current one is OutOfRange,
// one at offset 0 over written data starts the ingest again; COMMIT
// verifies size and digest (FailedPrecondition) and takes labels. A blob
// the namespace has already is AlreadyExists, which clients take as
// success.
package content

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/events"
	eventtypes "github.com/containerd/containerd/api/events"
	api "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// readChunk is the most data one ReadContentResponse carries.
	readChunk = 1 << 20
	// listBatch is how many infos one ListContentResponse carries.
	listBatch = 100
)

// Service answers the Content API.
type Service struct {
	api.UnimplementedContentServer
	store     content.Store
	publisher events.Publisher
}

// New returns the service over store.
func New(store content.Store, p events.Publisher) *Service {
	return &Service{store: store, publisher: p}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterContentServer(g, s) }

// Info describes one blob.
func (s *Service) Info(ctx context.Context, req *api.InfoRequest) (*api.InfoResponse, error) {
	info, err := s.store.Info(ctx, digest.Digest(req.Digest))
	if err != nil {
		return nil, err
	}
	return &api.InfoResponse{Info: infoToProto(info)}, nil
}

// Update changes the labels of a blob, honouring the field mask.
func (s *Service) Update(ctx context.Context, req *api.UpdateRequest) (*api.UpdateResponse, error) {
	info, err := s.store.Update(ctx, content.Info{
		Digest: digest.Digest(req.GetInfo().GetDigest()),
		Labels: req.GetInfo().GetLabels(),
	}, req.GetUpdateMask().GetPaths()...)
	if err != nil {
		return nil, err
	}
	return &api.UpdateResponse{Info: infoToProto(info)}, nil
}

// List streams the blobs matching any filter, listBatch per message.
func (s *Service) List(req *api.ListContentRequest, stream api.Content_ListServer) error {
	var batch []*api.Info
	err := s.store.Walk(stream.Context(), func(info content.Info) error {
		batch = append(batch, infoToProto(info))
		if len(batch) < listBatch {
			return nil
		}
		err := stream.Send(&api.ListContentResponse{Info: batch})
		batch = nil
		return err
	}, req.Filters...)
	if err != nil {
		return err
	}
	if len(batch) > 0 {
		return stream.Send(&api.ListContentResponse{Info: batch})
	}
	return nil
}

// Delete removes a blob from the caller's namespace.
func (s *Service) Delete(ctx context.Context, req *api.DeleteContentRequest) (*emptypb.Empty, error) {
	dgst := digest.Digest(req.Digest)
	if err := s.store.Delete(ctx, dgst); err != nil {
		return nil, err
	}
	if err := s.publisher.Publish(ctx, "/content/delete", &eventtypes.ContentDelete{Digest: req.Digest}); err != nil {
		log.G(ctx).WithError(err).WithField("digest", dgst).Warn("publishing /content/delete")
	}
	return &emptypb.Empty{}, nil
}

// Read streams size bytes of a blob from offset (to its end when size is 0
// or reaches past it), in chunks of at most readChunk bytes. As in
// containerd, a negative offset reads from 0 and an offset past the end is
// OutOfRange.
func (s *Service) Read(req *api.ReadContentRequest, stream api.Content_ReadServer) error {
	ctx := stream.Context()
	dgst := digest.Digest(req.Digest)
	info, err := s.store.Info(ctx, dgst)
	if err != nil {
		return err
	}
	ra, err := s.store.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst, Size: info.Size})
	if err != nil {
		return err
	}
	defer ra.Close()
	size := ra.Size()
	off := max(req.Offset, 0)
	if off > size {
		return fmt.Errorf("read of content %s at offset %d, past its %d bytes: %w", dgst, off, size, errdefs.ErrOutOfRange)
	}
	end := size
	if req.Size > 0 && req.Size < size-off {
		end = off + req.Size
	}
	buf := make([]byte, min(end-off, readChunk))
	for off < end {
		n, err := ra.ReadAt(buf[:min(end-off, int64(len(buf)))], off)
		if n > 0 {
			if err := stream.Send(&api.ReadContentResponse{Offset: off, Data: buf[:n]}); err != nil {
				return err
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) {
			if off < end {
				return fmt.Errorf("content %s: short read at %d of %d bytes: %w", dgst, off, end, io.ErrUnexpectedEOF)
			}
			break
		} else if err != nil {
			return fmt.Errorf("content %s: read: %w", dgst, err)
		}
	}
	return nil
}

// Status describes one ingest.
func (s *Service) Status(ctx context.Context, req *api.StatusRequest) (*api.StatusResponse, error) {
	st, err := s.store.Status(ctx, req.Ref)
	if err != nil {
		return nil, err
	}
	return &api.StatusResponse{Status: statusToProto(st)}, nil
}

// ListStatuses describes the ingests matching any filter.
func (s *Service) ListStatuses(ctx context.Context, req *api.ListStatusesRequest) (*api.ListStatusesResponse, error) {
	sts, err := s.store.ListStatuses(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.ListStatusesResponse{Statuses: make([]*api.Status, 0, len(sts))}
	for _, st := range sts {
		resp.Statuses = append(resp.Statuses, statusToProto(st))
	}
	return resp, nil
}

// Abort removes an ingest and its data.
func (s *Service) Abort(ctx context.Context, req *api.AbortRequest) (*emptypb.Empty, error) {
	if err := s.store.Abort(ctx, req.Ref); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Write runs one ingest over a stream; see the package comment.
func (s *Service) Write(stream api.Content_WriteServer) error {
	ctx := stream.Context()
	req := new(api.WriteContentRequest)
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	ref := req.Ref
	if ref == "" {
		return fmt.Errorf("first write message must have a ref: %w", errdefs.ErrInvalidArgument)
	}
	total := req.Total
	expected := digest.Digest(req.Expected)
	if expected != "" {
		if err := content.ValidateDigest(expected); err != nil {
			return err
		}
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("ref", ref))
	w, err := s.store.Writer(ctx, content.WithRef(ref), content.WithDescriptor(ocispec.Descriptor{Size: total, Digest: expected}))
	if err != nil {
		return err
	}
	defer w.Close()

	for {
		ws, err := w.Status()
		if err != nil {
			return err
		}
		resp := &api.WriteContentResponse{
			Action:    req.Action,
			StartedAt: timestamppb.New(ws.StartedAt),
			UpdatedAt: timestamppb.New(ws.UpdatedAt),
			Offset:    ws.Offset,
		}
		if req.Expected != "" {
			d := digest.Digest(req.Expected)
			if err := content.ValidateDigest(d); err != nil {
				return err
			}
			expected = d
			if _, err := s.store.Info(ctx, d); err == nil {
				w.Close()
				if err := s.store.Abort(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
					log.G(ctx).WithError(err).Warn("aborting the ingest of present content")
				}
				return fmt.Errorf("content %s: %w", d, errdefs.ErrAlreadyExists)
			}
		}
		if req.Total > 0 {
			total = req.Total
		}
		resp.Total = total

		switch req.Action {
		case api.WriteAction_STAT:
			resp.Digest = w.Digest().String()
		case api.WriteAction_WRITE, api.WriteAction_COMMIT:
			if req.Offset > 0 && req.Offset != ws.Offset {
				return fmt.Errorf("ingest %q: write at offset %d, but the current offset is %d: %w", ref, req.Offset, ws.Offset, errdefs.ErrOutOfRange)
			}
			if req.Offset == 0 && ws.Offset > 0 {
				if err := w.Truncate(0); err != nil {
					return err
				}
				resp.Offset = 0
			}
			if len(req.Data) > 0 {
				n, err := w.Write(req.Data)
				if err != nil {
					return err
				}
				resp.Offset += int64(n)
			}
			if req.Action == api.WriteAction_COMMIT {
				var opts []content.Opt
				if req.Labels != nil {
					opts = append(opts, content.WithLabels(req.Labels))
				}
				if err := w.Commit(ctx, total, expected, opts...); err != nil {
					return err
				}
			}
			resp.Digest = w.Digest().String()
		default:
			return fmt.Errorf("ingest %q: unknown write action %d: %w", ref, req.Action, errdefs.ErrInvalidArgument)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if req.Action == api.WriteAction_COMMIT {
			return nil
		}
		// One request serves the whole stream: berthd's codec decodes
		// into the capacity of req.Data (the data is in the ingest by now).
		if err := stream.RecvMsg(req); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func infoToProto(info content.Info) *api.Info {
	return &api.Info{
		Digest:    info.Digest.String(),
		Size:      info.Size,
		CreatedAt: timestamppb.New(info.CreatedAt),
		UpdatedAt: timestamppb.New(info.UpdatedAt),
		Labels:    info.Labels,
	}
}

func statusToProto(st content.Status) *api.Status {
	return &api.Status{
		StartedAt: timestamppb.New(st.StartedAt),
		UpdatedAt: timestamppb.New(st.UpdatedAt),
		Ref:       st.Ref,
		Offset:    st.Offset,
		Total:     st.Total,
		Expected:  st.Expected.String(),
	}
}
