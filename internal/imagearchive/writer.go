package imagearchive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Provider opens blobs for Export; a blob that is not there is an error of
// class errdefs.ErrNotFound.
type Provider interface {
	Open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// ExportOptions control Export.
type ExportOptions struct {
	// Platform selects the manifests of multi-platform images; nil is the
	// host's platform, unless AllPlatforms.
	Platform     platforms.MatchComparer
	PlatformName string
	AllPlatforms bool
	// SkipDockerManifest leaves out docker's manifest.json.
	SkipDockerManifest bool
	// Source names where blobs come from, for messages ("the content store").
	Source string
}

// DockerManifestEntry is one image of docker's manifest.json, as docker
// load reads it.
type DockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// exportEpoch stamps every entry, so that an export is reproducible.
var exportEpoch = time.Unix(0, 0).UTC()

// BlobPath is where an archive holds a blob.
func BlobPath(d digest.Digest) string {
	return ocispec.ImageBlobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// Export writes images as a tar to w: an OCI image layout (oci-layout,
// index.json naming each image with the annotations
// io.containerd.image.name and org.opencontainers.image.ref.name, the blobs
// of the platforms selected) and docker's manifest.json, one entry per
// manifest, so that both `ctr images import` and `docker load` read it.
// Targets keep their digests: an index is exported as it is, with only the
// blobs of the platforms selected.
func Export(ctx context.Context, w io.Writer, p Provider, images []Image, opts ExportOptions) error {
	sel := Selection{}
	switch {
	case opts.AllPlatforms:
	case opts.Platform != nil:
		sel = Selection{Platform: opts.Platform, Name: opts.PlatformName}
	default:
		sel = Selection{Platform: platforms.Default(), Name: platforms.Format(platforms.DefaultSpec())}
	}
	source := opts.Source
	if source == "" {
		source = "the content store"
	}
	docs := map[digest.Digest][]byte{}
	fetch := func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
		if b, ok := docs[desc.Digest]; ok {
			return b, nil
		}
		rc, err := p.Open(ctx, desc)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, MaxDocumentSize+1))
		if err != nil {
			return nil, err
		}
		docs[desc.Digest] = b
		return b, nil
	}

	all := &Graph{byDigest: map[digest.Digest]*Node{}}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	var dockerEntries []*DockerManifestEntry
	byManifest := map[digest.Digest]*DockerManifestEntry{}
	for _, img := range images {
		var g Graph
		if err := g.Walk(ctx, fetch, img.Target, sel); err != nil {
			var mb *MissingBlobError
			if errors.As(err, &mb) {
				mb.Source = source
			}
			return fmt.Errorf("image %q: %w", img.Name, err)
		}
		for _, n := range g.Nodes {
			if all.byDigest[n.Desc.Digest] == nil {
				all.byDigest[n.Desc.Digest] = n
				all.Nodes = append(all.Nodes, n)
			}
		}
		desc := img.Target
		desc.Platform = nil
		desc.Annotations = maps.Clone(desc.Annotations)
		if desc.Annotations == nil {
			desc.Annotations = map[string]string{}
		}
		desc.Annotations[AnnotationImageName] = img.Name
		desc.Annotations[ocispec.AnnotationRefName] = refName(img.Name)
		index.Manifests = append(index.Manifests, desc)

		if opts.SkipDockerManifest {
			continue
		}
		m := dockerManifestOf(&g)
		if m == nil {
			continue
		}
		e := byManifest[m.Desc.Digest]
		if e == nil {
			mf, err := ParseManifest(m.Doc, m.Desc)
			if err != nil {
				return err
			}
			e = &DockerManifestEntry{Config: BlobPath(mf.Config.Digest), RepoTags: []string{}}
			for _, l := range mf.Layers {
				e.Layers = append(e.Layers, BlobPath(l.Digest))
			}
			byManifest[m.Desc.Digest] = e
			dockerEntries = append(dockerEntries, e)
		}
		if tag, ok := FamiliarTag(img.Name); ok {
			e.RepoTags = append(e.RepoTags, tag)
		}
	}

	tw := tar.NewWriter(w)
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := writeFile(tw, ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	if err := writeFile(tw, ocispec.ImageIndexFile, indexJSON); err != nil {
		return err
	}
	if len(dockerEntries) > 0 {
		b, err := json.Marshal(dockerEntries)
		if err != nil {
			return err
		}
		if err := writeFile(tw, "manifest.json", b); err != nil {
			return err
		}
	}
	for _, dir := range []string{ocispec.ImageBlobsDir + "/", ocispec.ImageBlobsDir + "/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: exportEpoch}); err != nil {
			return err
		}
	}
	for _, n := range all.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeBlob(ctx, tw, p, n, docs, source); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dockerManifestOf picks the manifest docker load gets for an image: an
// image manifest (not an attestation), the best match for the host.
func dockerManifestOf(g *Graph) *Node {
	var best *Node
	host := platforms.Default()
	for _, m := range g.Manifests() {
		if m.Desc.Annotations[annotationReferenceType] != "" || m.Doc == nil {
			continue
		}
		mf, err := ParseManifest(m.Doc, m.Desc)
		if err != nil || !IsConfigType(mf.Config.MediaType) {
			continue
		}
		usable := true
		for _, l := range mf.Layers {
			if !IsLayerType(l.MediaType) || isForeignLayer(l) {
				usable = false
			}
		}
		if !usable {
			continue
		}
		switch {
		case best == nil:
			best = m
		case m.Platform != nil && best.Platform != nil && host.Less(*m.Platform, *best.Platform):
			best = m
		}
	}
	return best
}

func writeFile(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: int64(len(b)), ModTime: exportEpoch}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// writeBlob streams one blob into the tar, verifying its size and digest.
func writeBlob(ctx context.Context, tw *tar.Writer, p Provider, n *Node, docs map[digest.Digest][]byte, source string) error {
	desc := n.Desc
	var r io.Reader
	if b, ok := docs[desc.Digest]; ok && int64(len(b)) == desc.Size {
		r = bytes.NewReader(b)
	} else {
		rc, err := p.Open(ctx, desc)
		if err != nil {
			if errdefs.IsNotFound(err) {
				if n.Kind == KindLayer && isForeignLayer(desc) {
					return nil
				}
				return &MissingBlobError{Desc: desc, Owner: n.Owner, Platform: n.Platform, Source: source}
			}
			return fmt.Errorf("read %s (%s): %w", desc.Digest, n.Owner, err)
		}
		defer rc.Close()
		r = rc
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: BlobPath(desc.Digest), Mode: 0o444, Size: desc.Size, ModTime: exportEpoch}); err != nil {
		return err
	}
	b := newBlob("", n.Owner, desc.Digest, desc.Size, r)
	if _, err := io.Copy(tw, b); err != nil {
		var sm *DigestMismatchError
		if errors.As(err, &sm) {
			return err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return &SizeMismatchError{Desc: desc, Owner: n.Owner, Size: b.n}
		}
		return fmt.Errorf("read %s (%s): %w", desc.Digest, n.Owner, err)
	}
	return nil
}
