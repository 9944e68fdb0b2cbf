// Package diff serves containerd.services.diff.v1.Diff: Apply unpacks a
// layer blob from the content store onto mounts (through internal/archive,
// which never writes outside its root); Diff writes the changes between two
// mount sets into the content store as a compressed layer.
package diff

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/mount"
	api "github.com/containerd/containerd/api/services/diff/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
)

// LabelUncompressed names a layer's uncompressed digest (its diff_id).
const LabelUncompressed = "containerd.io/uncompressed"

// Service answers the Diff API.
type Service struct {
	api.UnimplementedDiffServer
	content content.Store
}

// New returns the service over the namespaced content store.
func New(cs content.Store) *Service { return &Service{content: cs} }

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterDiffServer(g, s) }

// Apply applies the layer req.Diff onto req.Mounts and returns the
// uncompressed layer's descriptor: its digest is the diff_id.
func (s *Service) Apply(ctx context.Context, req *api.ApplyRequest) (*api.ApplyResponse, error) {
	desc := req.GetDiff()
	if desc == nil {
		return nil, fmt.Errorf("apply: a layer descriptor is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := content.ValidateDigest(digest.Digest(desc.Digest)); err != nil {
		return nil, err
	}
	if !isLayer(desc.MediaType) {
		return nil, fmt.Errorf("apply: media type %q is not a layer: %w", desc.MediaType, errdefs.ErrNotImplemented)
	}
	ra, err := s.content.ReaderAt(ctx, ocispec.Descriptor{MediaType: desc.MediaType, Digest: digest.Digest(desc.Digest), Size: desc.Size})
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	r := io.NewSectionReader(ra, 0, ra.Size())
	mounts := mount.FromProto(req.Mounts)
	var dgst digest.Digest
	var size int64
	apply := func(root string, opts ...archive.ApplyOpt) error {
		var err error
		dgst, size, err = archive.Apply(ctx, root, r, opts...)
		if err == nil && req.SyncFs {
			err = archive.SyncFS(root)
		}
		return err
	}
	if upper, lowers, ok := overlayUpper(mounts); ok {
		// the overlay snapshotter's layer: write the upper directory
		// directly, with overlay's own whiteouts
		err = apply(upper, archive.WithOverlayWhiteouts(), archive.WithParents(lowers...))
	} else if len(mounts) == 1 && mounts[0].Type == "bind" && !hasOption(mounts[0].Options, "ro") {
		err = apply(mounts[0].Source)
	} else {
		err = mount.WithTempMount(ctx, mounts, func(root string) error { return apply(root) })
	}
	if err != nil {
		return nil, fmt.Errorf("apply layer %s: %w", desc.Digest, err)
	}
	return &api.ApplyResponse{Applied: &types.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dgst.String(), Size: size}}, nil
}

func isLayer(mt string) bool {
	return strings.Contains(mt, "layer") || mt == "" || strings.HasPrefix(mt, "application/vnd.docker.image.rootfs")
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// overlayUpper recognises one writable overlay mount and returns its
// upper directory and lower directories.
func overlayUpper(ms []mount.Mount) (string, []string, bool) {
	if len(ms) != 1 || ms[0].Type != "overlay" {
		return "", nil, false
	}
	var upper string
	var lowers []string
	for _, o := range ms[0].Options {
		switch {
		case strings.HasPrefix(o, "upperdir="):
			upper = strings.TrimPrefix(o, "upperdir=")
		case strings.HasPrefix(o, "lowerdir="):
			lowers = strings.Split(strings.TrimPrefix(o, "lowerdir="), ":")
		}
	}
	return upper, lowers, upper != ""
}

// Diff writes the changes from req.Left to req.Right as a layer into the
// content store (gzip unless the media type asks for none or zstd).
func (s *Service) Diff(ctx context.Context, req *api.DiffRequest) (*api.DiffResponse, error) {
	mt := req.MediaType
	if mt == "" {
		mt = ocispec.MediaTypeImageLayerGzip
	}
	var compress func(io.Writer) (io.WriteCloser, error)
	switch mt {
	case ocispec.MediaTypeImageLayerGzip, "application/vnd.docker.image.rootfs.diff.tar.gzip":
		compress = func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestSpeed) }
	case ocispec.MediaTypeImageLayerZstd:
		compress = func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) }
	case ocispec.MediaTypeImageLayer, "application/vnd.docker.image.rootfs.diff.tar":
		compress = func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil }
	default:
		return nil, fmt.Errorf("diff: media type %q is not supported: %w", mt, errdefs.ErrNotImplemented)
	}
	ref := req.Ref
	if ref == "" {
		ref = fmt.Sprintf("diff-%d", time.Now().UnixNano())
	}
	var desc ocispec.Descriptor
	err := mount.WithReadonlyTempMount(ctx, mount.FromProto(req.Left), func(lower string) error {
		return mount.WithReadonlyTempMount(ctx, mount.FromProto(req.Right), func(upper string) error {
			w, err := s.content.Writer(ctx, content.WithRef(ref))
			if err != nil {
				return err
			}
			defer w.Close()
			if err := w.Truncate(0); err != nil {
				return err
			}
			cw, err := compress(w)
			if err != nil {
				return err
			}
			dd := digest.Canonical.Digester()
			if err := archive.Diff(ctx, lower, upper, io.MultiWriter(cw, dd.Hash())); err != nil {
				return err
			}
			if err := cw.Close(); err != nil {
				return err
			}
			lbls := map[string]string{LabelUncompressed: dd.Digest().String()}
			for k, v := range req.Labels {
				lbls[k] = v
			}
			st, err := w.Status()
			if err != nil {
				return err
			}
			desc = ocispec.Descriptor{MediaType: mt, Digest: w.Digest(), Size: st.Offset}
			if err := w.Commit(ctx, st.Offset, "", content.WithLabels(lbls)); err != nil && !errdefs.IsAlreadyExists(err) {
				return err
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return &api.DiffResponse{Diff: &types.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest.String(), Size: desc.Size}}, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
