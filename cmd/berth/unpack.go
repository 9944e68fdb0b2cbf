package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/imagearchive"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// chainIDs returns the chain ID of each layer prefix: the snapshot names an
// unpacked image uses, as containerd computes them.
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// unpack applies the layers of an image into snapshotter sn the way ctr
// does (Prepare an extract key on the parent chain, Diff.Apply, Commit to
// the chain ID; layers already there are skipped), checks every applied
// layer against the config's diff_id, and labels the config blob with the
// top snapshot so that garbage collection keeps the snapshots while the
// image lives. ctx must carry the namespace and the operation's lease.
func unpack(ctx context.Context, conn *grpc.ClientConn, manifest ocispec.Manifest, config ocispec.Image, sn string, progress io.Writer) (digest.Digest, error) {
	diffIDs := config.RootFS.DiffIDs
	if len(diffIDs) != len(manifest.Layers) {
		return "", fmt.Errorf("image has %d layers but its config lists %d diff_ids: %w", len(manifest.Layers), len(diffIDs), errdefs.ErrInvalidArgument)
	}
	snaps := snapshotsapi.NewSnapshotsClient(conn)
	diffs := diffapi.NewDiffClient(conn)
	chains := chainIDs(diffIDs)
	parent := ""
	for i, layer := range manifest.Layers {
		chain := chains[i].String()
		if _, err := snaps.Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: sn, Key: chain}); err == nil {
			parent = chain
			continue
		} else if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return "", err
		}
		if progress != nil {
			fmt.Fprintf(progress, "unpacking layer %d/%d %s (%s)\n", i+1, len(manifest.Layers), layer.Digest, byteSize(layer.Size))
		}
		key := fmt.Sprintf("extract-%d-%s %s", time.Now().UnixNano(), randomSuffix(), chain)
		prep, err := snaps.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: sn, Key: key, Parent: parent})
		if err != nil {
			return "", fmt.Errorf("prepare layer %d: %w", i+1, errgrpc.ToNative(err))
		}
		applied, err := diffs.Apply(ctx, &diffapi.ApplyRequest{
			Diff:   &types.Descriptor{MediaType: layer.MediaType, Digest: layer.Digest.String(), Size: layer.Size},
			Mounts: prep.Mounts,
		})
		if err == nil && applied.Applied.Digest != diffIDs[i].String() {
			err = fmt.Errorf("layer %s unpacks to %s, but the image config says %s: %w", layer.Digest, applied.Applied.Digest, diffIDs[i], errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			_, _ = snaps.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: sn, Key: key})
			return "", fmt.Errorf("apply layer %d (%s): %w", i+1, layer.Digest, errgrpc.ToNative(err))
		}
		if _, err := snaps.Commit(ctx, &snapshotsapi.CommitSnapshotRequest{Snapshotter: sn, Name: chain, Key: key}); err != nil {
			_, _ = snaps.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: sn, Key: key})
			if !errdefs.IsAlreadyExists(errgrpc.ToNative(err)) { // unpacked meanwhile by someone else
				return "", fmt.Errorf("commit layer %d: %w", i+1, errgrpc.ToNative(err))
			}
		}
		parent = chain
	}
	top := chains[len(chains)-1]
	label := "containerd.io/gc.ref.snapshot." + sn
	_, err := contentapi.NewContentClient(conn).Update(ctx, &contentapi.UpdateRequest{
		Info:       &contentapi.Info{Digest: manifest.Config.Digest.String(), Labels: map[string]string{label: top.String()}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels." + label}},
	})
	if err != nil {
		return "", fmt.Errorf("label config %s with its snapshot: %w", manifest.Config.Digest, errgrpc.ToNative(err))
	}
	return top, nil
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}

func init() { importUnpack = importUnpackImages }

// importUnpackImages unpacks, for this host's platform, each image an
// import created.
func importUnpackImages(c *cli.Context, ctx context.Context, cl *client, images []imagearchive.Image) error {
	sn := c.String("snapshotter")
	if sn == "" {
		sn = "overlayfs"
		ns, err := namespacesapi.NewNamespacesClient(cl.conn).Get(ctx, &namespacesapi.GetNamespaceRequest{Name: cl.namespace})
		if err == nil && ns.Namespace.Labels["containerd.io/defaults/snapshotter"] != "" {
			sn = ns.Namespace.Labels["containerd.io/defaults/snapshotter"]
		}
	}
	fetch := documents(contentapi.NewContentClient(cl.conn))
	var progress io.Writer = c.App.Writer
	if c.Bool("quiet") {
		progress = nil
	}
	done := map[digest.Digest]bool{}
	for _, img := range images {
		m, cfg, err := resolveManifest(ctx, fetch, img.Target)
		if err != nil {
			return cl.fail(err, "unpack", imageObject(cl, img.Name))
		}
		if done[m.Config.Digest] {
			continue
		}
		if _, err := unpack(ctx, cl.conn, m, cfg, sn, progress); err != nil {
			return cl.fail(err, "unpack", imageObject(cl, img.Name))
		}
		done[m.Config.Digest] = true
	}
	return nil
}

// resolveManifest returns the manifest of target for this host's platform
// (target itself, or the best match of an index) and its config.
func resolveManifest(ctx context.Context, fetch imagearchive.Fetcher, target ocispec.Descriptor) (ocispec.Manifest, ocispec.Image, error) {
	var m ocispec.Manifest
	var cfg ocispec.Image
	for depth := 0; ; depth++ {
		b, err := fetch(ctx, target)
		if err != nil {
			return m, cfg, err
		}
		switch target.MediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				return m, cfg, fmt.Errorf("index %s: %v: %w", target.Digest, err, errdefs.ErrInvalidArgument)
			}
			match := platforms.Default()
			found := false
			for _, d := range idx.Manifests {
				if d.Platform == nil || match.Match(*d.Platform) {
					target, found = d, true
					break
				}
			}
			if !found || depth > 4 {
				return m, cfg, fmt.Errorf("index %s has no manifest for %s: %w", target.Digest, platforms.DefaultString(), errdefs.ErrNotFound)
			}
			continue
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return m, cfg, fmt.Errorf("manifest %s: %v: %w", target.Digest, err, errdefs.ErrInvalidArgument)
		}
		cb, err := fetch(ctx, m.Config)
		if err != nil {
			return m, cfg, err
		}
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return m, cfg, fmt.Errorf("config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
		}
		return m, cfg, nil
	}
}
