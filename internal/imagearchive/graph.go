package imagearchive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types and annotations of containerd and docker that OCI does not define.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeign      = "application/vnd.docker.image.rootfs.foreign.diff.tar"
	MediaTypeDockerForeignGzip  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	mediaTypeCheckpoint         = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
	mediaTypeCheckpointConfig   = "application/vnd.containerd.container.checkpoint.config.v1+proto"

	// AnnotationImageName is containerd's annotation naming the image a
	// descriptor of an archive's index.json is the target of.
	AnnotationImageName = "io.containerd.image.name"
	// annotationReferenceType marks buildkit's attestation manifests.
	annotationReferenceType   = "vnd.docker.reference.type"
	annotationReferenceDigest = "vnd.docker.reference.digest"

	labelGCContent = "containerd.io/gc.ref.content"
)

// Limits on what is read into memory.
const (
	// MaxDocumentSize bounds indexes, manifests and configs (and an
	// archive's index.json and manifest.json).
	MaxDocumentSize = 4 << 20
	// maxChildren bounds the descriptors of one index or manifest.
	maxChildren = 10000
	// maxDepth bounds nested indexes.
	maxDepth = 8
)

// Kind is the role of a blob in an image graph.
type Kind int

// The kinds of blobs.
const (
	KindBlob     Kind = iota // anything else: attestation data, artifacts
	KindIndex                // an OCI index or a docker manifest list
	KindManifest             // an image manifest
	KindConfig               // the config of a manifest
	KindLayer                // a layer of a manifest
)

func (k Kind) String() string {
	switch k {
	case KindIndex:
		return "index"
	case KindManifest:
		return "manifest"
	case KindConfig:
		return "config"
	case KindLayer:
		return "layer"
	}
	return "blob"
}

// IsIndexType reports whether mt is an index media type.
func IsIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// IsManifestType reports whether mt is an image manifest media type.
func IsManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// IsConfigType reports whether mt is an image config (docker's or OCI's).
func IsConfigType(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == MediaTypeDockerConfig
}

// isKnownConfig is containerd's IsKnownConfig: image and checkpoint configs.
func isKnownConfig(mt string) bool {
	return IsConfigType(mt) || mt == mediaTypeCheckpoint || mt == mediaTypeCheckpointConfig
}

// IsLayerType is containerd's IsLayerType.
func IsLayerType(mt string) bool {
	if strings.HasPrefix(mt, "application/vnd.oci.image.layer.") {
		return true
	}
	base, _, _ := strings.Cut(mt, "+")
	switch base {
	case MediaTypeDockerLayer, MediaTypeDockerLayerGzip, MediaTypeDockerForeign, MediaTypeDockerForeignGzip:
		return true
	}
	return false
}

// isForeignLayer reports layers that archives may leave out: they are
// fetched from their URLs.
func isForeignLayer(desc ocispec.Descriptor) bool {
	switch desc.MediaType {
	case MediaTypeDockerForeign, MediaTypeDockerForeignGzip:
		return true
	}
	return strings.HasPrefix(desc.MediaType, "application/vnd.oci.image.layer.nondistributable.")
}

// childGCLabel is the label key prefix containerd's ChildGCLabels gives a
// child; keys ending in "." get a number.
func childGCLabel(desc ocispec.Descriptor) string {
	switch {
	case isKnownConfig(desc.MediaType):
		return labelGCContent + ".config"
	case IsManifestType(desc.MediaType):
		return labelGCContent + ".m."
	case IsLayerType(desc.MediaType):
		return labelGCContent + ".l."
	}
	return labelGCContent + "."
}

// GCLabels are the labels by which a parent references children, numbered
// as containerd's SetChildrenLabels numbers them: containerd.io/gc.ref.content.m.<i>
// for manifests, .config, .l.<i> for layers, .<i> for the rest.
func GCLabels(children []ocispec.Descriptor) map[string]string {
	if len(children) == 0 {
		return nil
	}
	labels := make(map[string]string, len(children))
	seen := map[string]int{}
	for _, ch := range children {
		key := childGCLabel(ch)
		i := seen[key]
		seen[key] = i + 1
		if i > 0 || strings.HasSuffix(key, ".") {
			key = fmt.Sprintf("%s%d", key, i)
		}
		labels[key] = ch.Digest.String()
	}
	return labels
}

// Node is one blob of an image graph.
type Node struct {
	Desc     ocispec.Descriptor
	Kind     Kind
	Children []ocispec.Descriptor // the selected children of an index or a manifest, in order
	Doc      []byte               // the JSON of an index or a manifest
	Platform *ocispec.Platform    // the platform of the manifest the blob belongs to, when known
	Owner    string               // what the blob is, for messages: "layer 0 of the linux/arm64 manifest sha256:…"
}

// Graph is the blobs of one or more images, each once, parents before
// children.
type Graph struct {
	Nodes    []*Node
	byDigest map[digest.Digest]*Node
}

// Node returns the node of dgst, or nil.
func (g *Graph) Node(dgst digest.Digest) *Node {
	return g.byDigest[dgst]
}

// Size is the sum of the sizes of the graph's blobs.
func (g *Graph) Size() int64 {
	var n int64
	for _, node := range g.Nodes {
		n += node.Desc.Size
	}
	return n
}

// Manifests are the graph's manifests, in order.
func (g *Graph) Manifests() []*Node {
	var out []*Node
	for _, n := range g.Nodes {
		if n.Kind == KindManifest {
			out = append(out, n)
		}
	}
	return out
}

// Selection chooses the platforms of multi-platform images.
type Selection struct {
	// Platform selects the manifests of an index; nil keeps all. In an
	// image's index only the best match is kept (as containerd's pull
	// does), so that an amd64 import does not need the 386 blobs.
	Platform platforms.MatchComparer
	// Name is the platform asked for, for messages ("linux/amd64").
	Name string
}

// Fetcher returns the bytes of the JSON document desc (an index or a
// manifest). A blob that is not there is an error of class
// errdefs.ErrNotFound. Walk checks the bytes against desc.
type Fetcher func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)

// Walk adds the blobs of the image target to g: target itself and, for an
// index, the manifests that sel selects, for a manifest its config and
// layers. Documents are fetched with fetch, bounded by MaxDocumentSize and
// validated (see ParseIndex and ParseManifest).
func (g *Graph) Walk(ctx context.Context, fetch Fetcher, target ocispec.Descriptor, sel Selection) error {
	if g.byDigest == nil {
		g.byDigest = map[digest.Digest]*Node{}
	}
	return g.walk(ctx, fetch, target, kindOf(target.MediaType), sel, "image target "+target.Digest.String(), target.Platform, 0)
}

func kindOf(mt string) Kind {
	switch {
	case IsIndexType(mt):
		return KindIndex
	case IsManifestType(mt):
		return KindManifest
	}
	return KindBlob
}

func (g *Graph) walk(ctx context.Context, fetch Fetcher, desc ocispec.Descriptor, kind Kind, sel Selection, owner string, plat *ocispec.Platform, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validDescriptor(desc); err != nil {
		return fmt.Errorf("%s: %w", owner, err)
	}
	if _, ok := g.byDigest[desc.Digest]; ok {
		return nil
	}
	if depth > maxDepth {
		return fmt.Errorf("%s: indexes nested deeper than %d: %w", owner, maxDepth, errdefs.ErrInvalidArgument)
	}
	node := &Node{Desc: desc, Kind: kind, Platform: plat, Owner: owner}
	g.byDigest[desc.Digest] = node
	g.Nodes = append(g.Nodes, node)
	switch kind {
	case KindIndex:
		b, err := fetchDocument(ctx, fetch, node)
		if err != nil {
			return err
		}
		idx, err := ParseIndex(b, desc)
		if err != nil {
			return err
		}
		node.Doc = b
		node.Children, err = selectManifests(desc, idx.Manifests, sel, false)
		if err != nil {
			return err
		}
		for _, ch := range node.Children {
			p := ch.Platform
			if p == nil {
				p = plat
			}
			if err := g.walk(ctx, fetch, ch, kindOf(ch.MediaType), sel, describeManifest(ch, desc), p, depth+1); err != nil {
				return err
			}
		}
	case KindManifest:
		b, err := fetchDocument(ctx, fetch, node)
		if err != nil {
			return err
		}
		m, err := ParseManifest(b, desc)
		if err != nil {
			return err
		}
		node.Doc = b
		node.Children = append([]ocispec.Descriptor{m.Config}, m.Layers...)
		what := manifestName(desc, plat)
		if err := g.walk(ctx, fetch, m.Config, KindConfig, sel, "config of "+what, plat, depth+1); err != nil {
			return err
		}
		for i, l := range m.Layers {
			if err := g.walk(ctx, fetch, l, KindLayer, sel, fmt.Sprintf("layer %d of %s", i, what), plat, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// manifestName is "the linux/arm64 manifest sha256:…", "the attestation
// manifest sha256:… (for sha256:…)" or "the manifest sha256:…".
func manifestName(desc ocispec.Descriptor, plat *ocispec.Platform) string {
	if desc.Annotations[annotationReferenceType] == "attestation-manifest" {
		s := "the attestation manifest " + desc.Digest.String()
		if ref := desc.Annotations[annotationReferenceDigest]; ref != "" {
			s += " (for " + ref + ")"
		}
		return s
	}
	if plat != nil && plat.OS != "" && plat.OS != "unknown" {
		return "the " + platforms.Format(*plat) + " manifest " + desc.Digest.String()
	}
	return "the manifest " + desc.Digest.String()
}

func describeManifest(ch, parent ocispec.Descriptor) string {
	kind := "manifest"
	if IsIndexType(ch.MediaType) {
		kind = "index"
	} else if !IsManifestType(ch.MediaType) {
		kind = "blob"
	}
	if kind == "manifest" {
		return strings.TrimPrefix(manifestName(ch, ch.Platform), "the ") + " of index " + parent.Digest.String()
	}
	return kind + " " + ch.Digest.String() + " of index " + parent.Digest.String()
}

// fetchDocument fetches an index or manifest and checks its size and digest.
func fetchDocument(ctx context.Context, fetch Fetcher, node *Node) ([]byte, error) {
	desc := node.Desc
	if desc.Size > MaxDocumentSize {
		return nil, &TooLargeError{Desc: desc, Kind: node.Kind, Size: desc.Size}
	}
	b, err := fetch(ctx, desc)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, &MissingBlobError{Desc: desc, Owner: node.Owner, Platform: node.Platform}
		}
		var tl *TooLargeError
		if errors.As(err, &tl) {
			tl.Kind = node.Kind
			return nil, tl
		}
		return nil, fmt.Errorf("%s: %w", node.Owner, err)
	}
	if len(b) > MaxDocumentSize {
		return nil, &TooLargeError{Desc: desc, Kind: node.Kind, Size: int64(len(b))}
	}
	if int64(len(b)) != desc.Size {
		return nil, &SizeMismatchError{Desc: desc, Owner: node.Owner, Size: int64(len(b))}
	}
	if got := digest.FromBytes(b); got != desc.Digest {
		return nil, &DigestMismatchError{Expected: desc.Digest, Got: got, Name: node.Owner}
	}
	return b, nil
}

// validDescriptor checks a descriptor's digest (before it names anything)
// and size.
func validDescriptor(desc ocispec.Descriptor) error {
	if err := content.ValidateDigest(desc.Digest); err != nil {
		return err
	}
	if desc.Size < 0 {
		return fmt.Errorf("descriptor of %s has a negative size %d: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

// selectManifests keeps the children of index that sel selects: all without
// a platform selector; otherwise those without a platform and the best
// match among those with one (every match when all is set: the top of an
// archive, whose entries are different images).
func selectManifests(index ocispec.Descriptor, children []ocispec.Descriptor, sel Selection, all bool) ([]ocispec.Descriptor, error) {
	if sel.Platform == nil || len(children) == 0 {
		return children, nil
	}
	best := -1
	keep := make([]bool, len(children))
	for i, ch := range children {
		switch {
		case ch.Platform == nil:
			keep[i] = true
		case !sel.Platform.Match(*ch.Platform):
		case all:
			keep[i] = true
		case best < 0 || sel.Platform.Less(*ch.Platform, *children[best].Platform):
			best = i
		}
	}
	if best >= 0 {
		keep[best] = true
	}
	var out []ocispec.Descriptor
	for i, ch := range children {
		if keep[i] {
			out = append(out, ch)
		}
	}
	if len(out) == 0 {
		return nil, &NoMatchError{Index: index.Digest, Wanted: sel.Name, Available: childPlatforms(children)}
	}
	return out, nil
}

// childPlatforms lists the distinct platforms of descriptors, formatted.
func childPlatforms(children []ocispec.Descriptor) []string {
	var out []string
	seen := map[string]bool{}
	for _, ch := range children {
		if ch.Platform == nil {
			continue
		}
		p := platforms.Format(*ch.Platform)
		if ch.Annotations[annotationReferenceType] == "attestation-manifest" || ch.Platform.OS == "unknown" {
			continue
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// probe reads the fields that tell an index from a manifest.
type probe struct {
	SchemaVersion *int            `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        json.RawMessage `json:"config"`
	Layers        json.RawMessage `json:"layers"`
	Manifests     json.RawMessage `json:"manifests"`
	FSLayers      json.RawMessage `json:"fsLayers"`
}

func present(r json.RawMessage) bool { return len(r) > 0 && string(r) != "null" }

// checkDocument rejects what is not a document of the kind desc says: bad
// JSON, schema 1, and a document that could be read both as an index and
// as a manifest (it has manifests and a config or layers), which would let
// one digest mean two different images.
func checkDocument(b []byte, desc ocispec.Descriptor, kind Kind) error {
	if len(b) > MaxDocumentSize {
		return &TooLargeError{Desc: desc, Kind: kind, Size: int64(len(b))}
	}
	var p probe
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%s %s: malformed JSON: %v: %w", kind, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if present(p.FSLayers) {
		return fmt.Errorf("%s %s: docker schema 1 manifests are not supported: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
	}
	if present(p.Manifests) && (present(p.Config) || present(p.Layers)) {
		return fmt.Errorf("%s %s has both manifests and a config or layers: it could be read as an index and as a manifest, refusing it: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
	}
	if p.SchemaVersion == nil || *p.SchemaVersion != 2 {
		return fmt.Errorf("%s %s: schemaVersion must be 2: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
	}
	switch kind {
	case KindIndex:
		if present(p.Config) || present(p.Layers) || IsManifestType(p.MediaType) {
			return fmt.Errorf("%s %s: expected an index, found a manifest: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
		}
	case KindManifest:
		if present(p.Manifests) || IsIndexType(p.MediaType) {
			return fmt.Errorf("%s %s: expected a manifest, found an index: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
		}
		if !present(p.Config) {
			return fmt.Errorf("%s %s: no config: %w", kind, desc.Digest, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ParseIndex decodes an index and validates its descriptors.
func ParseIndex(b []byte, desc ocispec.Descriptor) (*ocispec.Index, error) {
	if err := checkDocument(b, desc, KindIndex); err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(idx.Manifests) > maxChildren {
		return nil, fmt.Errorf("index %s has %d manifests, more than %d: %w", desc.Digest, len(idx.Manifests), maxChildren, errdefs.ErrInvalidArgument)
	}
	for i, m := range idx.Manifests {
		if err := validDescriptor(m); err != nil {
			return nil, fmt.Errorf("index %s, manifest %d: %w", desc.Digest, i, err)
		}
	}
	return &idx, nil
}

// ParseManifest decodes a manifest and validates its descriptors.
func ParseManifest(b []byte, desc ocispec.Descriptor) (*ocispec.Manifest, error) {
	if err := checkDocument(b, desc, KindManifest); err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(m.Layers) > maxChildren {
		return nil, fmt.Errorf("manifest %s has %d layers, more than %d: %w", desc.Digest, len(m.Layers), maxChildren, errdefs.ErrInvalidArgument)
	}
	if err := validDescriptor(m.Config); err != nil {
		return nil, fmt.Errorf("manifest %s, config: %w", desc.Digest, err)
	}
	for i, l := range m.Layers {
		if err := validDescriptor(l); err != nil {
			return nil, fmt.Errorf("manifest %s, layer %d: %w", desc.Digest, i, err)
		}
	}
	return &m, nil
}

// ConfigPlatform reads the platform of an image config.
func ConfigPlatform(b []byte) (ocispec.Platform, error) {
	var img ocispec.Image
	if err := json.Unmarshal(b, &img); err != nil {
		return ocispec.Platform{}, fmt.Errorf("image config: malformed JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return platforms.Normalize(img.Platform), nil
}
