// Package imagearchive reads and writes image archives, the tars of
// `ctr images import/export`, `docker save/load` and OCI image layouts.
//
// Reading (Import) accepts an OCI image layout (oci-layout, index.json,
// blobs/sha256/<hex>) and docker save's format (manifest.json naming a
// config and layer files, the legacy <id>/layer.tar layout included, which
// is converted to docker schema 2 manifests and an index as containerd
// does), plain or gzip-compressed. Writing (Export) produces a tar that
// both `ctr images import` and `docker load` accept: an OCI layout whose
// index.json names the images, plus docker's manifest.json.
//
// Invariants:
//   - Nothing is written anywhere but through the Ingester: member names
//     are never paths on disk. Names that are absolute or leave the
//     archive ("../x") are refused.
//   - Every blob imported is verified while it streams: its size, and its
//     digest whenever the archive names it by one. A blob whose bytes do
//     not match is an error naming the digest, and the Ingester never
//     sees its last byte without the check having passed (the Blob reader
//     reports the mismatch instead of io.EOF).
//   - Digests are validated (content.ValidateDigest) before they are used.
//   - What is read into memory is bounded: indexes, manifests and configs
//     by MaxDocumentSize each, all such documents of an archive by
//     maxKeptDocuments, the members of an archive by maxMembers.
//   - Indexes and manifests are checked (ParseIndex, ParseManifest): a
//     document that could be read both as an index and as a manifest is
//     refused.
//   - A blob an image needs and the archive lacks is a MissingBlobError
//     naming the digest, what it is, and which flag helps.
package imagearchive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// maxMembers bounds the entries of an archive.
	maxMembers = 1 << 16
	// maxKeptDocuments bounds the JSON documents of an archive held in
	// memory while it is read.
	maxKeptDocuments = 64 << 20
	// headSize is how much of every member is kept to detect compression.
	headSize = 8
)

// Blob is one blob being imported: read it to the end to get its bytes. A
// read that reaches the end of a blob whose bytes do not match its size or
// digest returns the error instead of io.EOF.
type Blob struct {
	Ref    string        // the ingest ref: "tar-" and the member name, or "manifest-<digest>" for documents made on import
	Digest digest.Digest // the digest the blob is known by in advance; empty for docker's layer.tar files
	Size   int64
	Name   string // the archive member; empty for documents made on import

	r    io.Reader
	d    digest.Digester
	n    int64
	head []byte
	sum  digest.Digest
	err  error
}

func newBlob(ref, name string, expected digest.Digest, size int64, r io.Reader) *Blob {
	return &Blob{Ref: ref, Name: name, Digest: expected, Size: size, r: r, d: digest.Canonical.Digester()}
}

// Read reads the blob's bytes, verifying them at the end.
func (b *Blob) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.sum != "" {
		return 0, io.EOF
	}
	if rest := b.Size - b.n; int64(len(p)) > rest+1 {
		p = p[:rest+1] // one byte more shows a member longer than declared
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.d.Hash().Write(p[:n])
		if len(b.head) < headSize {
			b.head = append(b.head, p[:min(n, headSize-len(b.head))]...)
		}
		b.n += int64(n)
		if b.n > b.Size {
			b.err = fmt.Errorf("%s: more than the %d bytes declared: %w", b.what(), b.Size, errdefs.ErrInvalidArgument)
			return 0, b.err
		}
	}
	switch {
	case err == io.EOF:
		if b.n != b.Size {
			b.err = fmt.Errorf("%s ends after %d of its %d bytes (truncated): %w", b.what(), b.n, b.Size, io.ErrUnexpectedEOF)
			return n, b.err
		}
		got := b.d.Digest()
		if b.Digest != "" && got != b.Digest {
			b.err = &DigestMismatchError{Expected: b.Digest, Got: got, Name: b.Name}
			return n, b.err
		}
		b.sum = got
		return n, io.EOF
	case err != nil:
		b.err = fmt.Errorf("%s: %w", b.what(), readError(err))
		return n, b.err
	}
	return n, nil
}

// Sum is the digest of the blob once it was read to the end, else "".
func (b *Blob) Sum() digest.Digest { return b.sum }

func (b *Blob) what() string {
	switch {
	case b.Digest != "":
		return "blob " + b.Digest.String()
	case b.Name != "":
		return fmt.Sprintf("archive member %q", b.Name)
	}
	return "blob " + b.Ref
}

// Ingester stores blobs. Ingest reads b to the end and makes it a blob,
// or, if a blob of digest b.Digest is present already, may return nil
// without reading it (it is then read and verified by Import all the same).
type Ingester interface {
	Ingest(ctx context.Context, b *Blob) error
}

// Options control Import.
type Options struct {
	// Platform selects the manifests of multi-platform images; nil is the
	// host's platform (platforms.Default), unless AllPlatforms.
	Platform platforms.MatchComparer
	// PlatformName is Platform as the user gave it, for messages.
	PlatformName string
	// AllPlatforms imports every manifest.
	AllPlatforms bool
	// IndexName names an image whose target is the archive's index.
	IndexName string
	// BaseName names the manifests that have a bare tag as OCI ref name:
	// BaseName:tag.
	BaseName string
	// OnPlan, if set, is called with the blobs to import before any is
	// written, when the archive can be read twice (a file, not a pipe).
	OnPlan func(blobs []ocispec.Descriptor)
}

// Image is an image an archive names: its name and its target.
type Image struct {
	Name   string
	Target ocispec.Descriptor
}

// Label is the garbage collection labels to set on a blob.
type Label struct {
	Digest digest.Digest
	Labels map[string]string
}

// Result is what Import wrote and what it leaves to the caller: the labels
// by which parents reference their children (set them with the content
// API, then create the images).
type Result struct {
	Format   string             // "oci" or "docker"
	Index    ocispec.Descriptor // the archive's index.json, or the index made for a docker archive
	Images   []Image
	Labels   []Label
	Blobs    []ocispec.Descriptor // the blobs written, in order
	Warnings []string
}

// member is an entry of the archive.
type member struct {
	name   string
	size   int64
	digest digest.Digest // named by (blobs/sha256/<hex>), or computed once read
	doc    []byte        // a JSON document held in memory
	head   []byte        // the first bytes, to detect compression
	link   string        // a symbolic link's target, cleaned
	done   bool          // ingested
}

type importer struct {
	opts    Options
	sel     Selection
	ing     Ingester
	members map[string]*member
	order   []*member
	digests map[digest.Digest]*member
	kept    int64

	layout    *ocispec.ImageLayout
	indexJSON []byte
	docker    []dockerEntry
	hasDocker bool

	res     Result
	written map[digest.Digest]bool
}

// dockerEntry is one image of docker's manifest.json.
type dockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Import reads an image archive from r, writes its blobs with ing and
// returns the images it names. A file is read twice: first its documents,
// so that a missing blob is reported before anything is written, then the
// blobs the selected platforms need. A stream is read once and every blob
// in it written, as ctr does.
func Import(ctx context.Context, r io.Reader, ing Ingester, opts Options) (*Result, error) {
	im := &importer{opts: opts, ing: ing, written: map[digest.Digest]bool{}}
	switch {
	case opts.AllPlatforms:
	case opts.Platform != nil:
		im.sel = Selection{Platform: opts.Platform, Name: opts.PlatformName}
	default:
		im.sel = Selection{Platform: platforms.Default(), Name: platforms.Format(platforms.DefaultSpec())}
	}
	if im.sel.Platform != nil && im.sel.Name == "" {
		im.sel.Name = "the one asked for"
	}

	if rs, start, ok := seekable(r); ok {
		compressed, err := isGzip(rs)
		if err != nil {
			return nil, err
		}
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return nil, err
		}
		if !compressed {
			return im.importTwice(ctx, rs, start)
		}
		r = rs
	}
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, readError(err)
	}
	var src io.Reader = br
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip-compressed archive: %w", readError(err))
		}
		defer zr.Close()
		src = zr
	}
	return im.importOnce(ctx, src)
}

// seekable reports whether r can be read again from its current offset.
func seekable(r io.Reader) (io.ReadSeeker, int64, bool) {
	rs, ok := r.(io.ReadSeeker)
	if !ok {
		return nil, 0, false
	}
	off, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, false
	}
	return rs, off, true
}

func isGzip(r io.Reader) (bool, error) {
	var magic [2]byte
	n, err := io.ReadFull(r, magic[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, readError(err)
	}
	return n == 2 && magic == [2]byte{0x1f, 0x8b}, nil
}

// readError explains what went wrong reading the tar.
func readError(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("the archive is truncated: %w", err)
	case errors.Is(err, tar.ErrHeader), errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum):
		return fmt.Errorf("not a tar archive, or a corrupt one (%v): %w", err, errdefs.ErrInvalidArgument)
	}
	return err
}

// importTwice reads the documents, plans, then writes the blobs needed.
func (im *importer) importTwice(ctx context.Context, rs io.ReadSeeker, start int64) (*Result, error) {
	if err := im.scan(ctx, rs, false); err != nil {
		return nil, err
	}
	p, err := im.plan(ctx)
	if err != nil {
		return nil, err
	}
	if im.opts.OnPlan != nil {
		im.opts.OnPlan(im.planned(p))
	}
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return nil, err
	}
	if err := im.ingestPlanned(ctx, tar.NewReader(rs), p); err != nil {
		return nil, err
	}
	return im.finish(ctx, p)
}

// importOnce writes every blob as it streams by, then plans.
func (im *importer) importOnce(ctx context.Context, r io.Reader) (*Result, error) {
	if err := im.scan(ctx, r, true); err != nil {
		return nil, err
	}
	p, err := im.plan(ctx)
	if err != nil {
		return nil, err
	}
	return im.finish(ctx, p)
}

// zeroTail counts the zero bytes that end what was read, so that an archive
// cut at an entry boundary (which archive/tar takes for its end) is told
// from one that ends with tar's end-of-archive marker (zero blocks).
type zeroTail struct {
	r io.Reader
	n int
}

func (z *zeroTail) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	i := n
	for i > 0 && p[i-1] == 0 {
		i--
	}
	if i > 0 {
		z.n = n - i
	} else {
		z.n += n
	}
	return n, err
}

// seekingZeroTail keeps the Seek of a file, which archive/tar uses to skip
// what it need not read.
type seekingZeroTail struct {
	*zeroTail
	s io.Seeker
}

func (z seekingZeroTail) Seek(off int64, whence int) (int64, error) { return z.s.Seek(off, whence) }

// memberName cleans a member's name and refuses names that leave the
// archive.
func memberName(name string) (string, error) {
	clean := path.Clean(strings.ReplaceAll(name, "\\", "/"))
	if strings.HasPrefix(name, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("archive member %q: the name leaves the archive: %w", name, errdefs.ErrInvalidArgument)
	}
	return clean, nil
}

// blobName returns the digest a member named blobs/<algorithm>/<hex> is
// named by; ok is false for other names.
func blobName(name string) (digest.Digest, bool, error) {
	rest, ok := strings.CutPrefix(name, ocispec.ImageBlobsDir+"/")
	if !ok {
		return "", false, nil
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false, fmt.Errorf("archive member %q: not a blob name (blobs/sha256/<hex>): %w", name, errdefs.ErrInvalidArgument)
	}
	d := digest.Digest(alg + ":" + enc)
	if err := content.ValidateDigest(d); err != nil {
		return "", false, fmt.Errorf("archive member %q: %w", name, err)
	}
	return d, true, nil
}

// isMetadata reports the members that are not blobs.
func isMetadata(name string) bool {
	switch name {
	case ocispec.ImageLayoutFile, ocispec.ImageIndexFile, "manifest.json", "repositories":
		return true
	}
	// docker's legacy per-layer metadata: <id>/json, <id>/VERSION
	dir, base := path.Split(name)
	return strings.Count(dir, "/") == 1 && (base == "json" || base == "VERSION")
}

// scan reads the archive's entries: the layout files are parsed, small
// JSON documents kept, and, with ingest, every blob written.
func (im *importer) scan(ctx context.Context, r io.Reader, ingest bool) error {
	tail := &zeroTail{r: r}
	var tr *tar.Reader
	if rs, ok := r.(io.ReadSeeker); ok {
		tr = tar.NewReader(seekingZeroTail{tail, rs})
	} else {
		tr = tar.NewReader(tail)
	}
	im.members = map[string]*member{}
	im.digests = map[digest.Digest]*member{}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return fmt.Errorf("the archive is empty: %w", errdefs.ErrInvalidArgument)
			}
			if tail.n < 512 {
				return fmt.Errorf("the archive is truncated: it ends without the end-of-archive marker of a tar: %w", io.ErrUnexpectedEOF)
			}
			return nil
		}
		if err != nil {
			return readError(err)
		}
		if n >= maxMembers {
			return fmt.Errorf("the archive has more than %d entries: %w", maxMembers, errdefs.ErrInvalidArgument)
		}
		name, err := memberName(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeReg, '\x00':
		case tar.TypeSymlink:
			if err := im.addLink(name, hdr.Linkname); err != nil {
				return err
			}
			continue
		default: // directories, and whatever else has no place in an image archive
			continue
		}
		if hdr.Size < 0 {
			return fmt.Errorf("archive member %q: negative size: %w", name, errdefs.ErrInvalidArgument)
		}
		if _, dup := im.members[name]; dup {
			return fmt.Errorf("archive member %q appears twice: %w", name, errdefs.ErrInvalidArgument)
		}
		m := &member{name: name, size: hdr.Size}
		im.members[name] = m
		im.order = append(im.order, m)
		if err := im.readMember(ctx, tr, m, ingest); err != nil {
			return err
		}
	}
}

func (im *importer) addLink(name, target string) error {
	if _, dup := im.members[name]; dup {
		return fmt.Errorf("archive member %q appears twice: %w", name, errdefs.ErrInvalidArgument)
	}
	if path.IsAbs(target) {
		return fmt.Errorf("archive member %q links to %q, outside the archive: %w", name, target, errdefs.ErrInvalidArgument)
	}
	to, err := memberName(path.Join(path.Dir(name), target))
	if err != nil {
		return fmt.Errorf("archive member %q links to %q, outside the archive: %w", name, target, errdefs.ErrInvalidArgument)
	}
	m := &member{name: name, link: to}
	im.members[name] = m
	return nil
}

// readMember handles one regular member.
func (im *importer) readMember(ctx context.Context, tr *tar.Reader, m *member, ingest bool) error {
	switch m.name {
	case ocispec.ImageLayoutFile:
		b, err := readDocument(tr, m, 64<<10)
		if err != nil {
			return err
		}
		var l ocispec.ImageLayout
		if err := json.Unmarshal(b, &l); err != nil {
			return fmt.Errorf("%s: malformed JSON: %v: %w", m.name, err, errdefs.ErrInvalidArgument)
		}
		im.layout = &l
		return nil
	case ocispec.ImageIndexFile:
		b, err := readDocument(tr, m, MaxDocumentSize)
		if err != nil {
			return err
		}
		im.indexJSON = b
		return nil
	case "manifest.json":
		b, err := readDocument(tr, m, MaxDocumentSize)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &im.docker); err != nil {
			return fmt.Errorf("manifest.json: malformed JSON: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if len(im.docker) > maxChildren {
			return fmt.Errorf("manifest.json lists %d images, more than %d: %w", len(im.docker), maxChildren, errdefs.ErrInvalidArgument)
		}
		im.hasDocker = true
		return nil
	}
	if isMetadata(m.name) {
		return nil
	}
	named, isBlob, err := blobName(m.name)
	if err != nil {
		return err
	}
	if isBlob {
		m.digest = named
		if _, ok := im.digests[named]; !ok {
			im.digests[named] = m
		}
	}
	if m.size > MaxDocumentSize {
		// a layer: written as it streams by, or only its first bytes read
		if !ingest {
			m.head = make([]byte, min(headSize, m.size))
			if _, err := io.ReadFull(tr, m.head); err != nil {
				return fmt.Errorf("archive member %q: %w", m.name, readError(err))
			}
			return nil
		}
		return im.ingestMember(ctx, m, tr)
	}
	b, err := io.ReadAll(io.LimitReader(tr, m.size+1))
	if err != nil {
		return fmt.Errorf("archive member %q: %w", m.name, readError(err))
	}
	if int64(len(b)) != m.size {
		return fmt.Errorf("archive member %q: %d of %d bytes: the archive is truncated: %w", m.name, len(b), m.size, io.ErrUnexpectedEOF)
	}
	got := digest.FromBytes(b)
	if m.digest != "" && got != m.digest {
		return &DigestMismatchError{Expected: m.digest, Got: got, Name: m.name}
	}
	m.digest = got
	m.head = b[:min(len(b), headSize)]
	if isJSONObject(b) {
		if im.kept+m.size > maxKeptDocuments {
			return fmt.Errorf("the archive holds more than %d MiB of JSON documents: %w", maxKeptDocuments>>20, errdefs.ErrInvalidArgument)
		}
		im.kept += m.size
		m.doc = b
	}
	if _, ok := im.digests[got]; !ok {
		im.digests[got] = m
	}
	if ingest {
		return im.ingestMember(ctx, m, bytes.NewReader(b))
	}
	return nil
}

// readDocument reads a layout file of at most limit bytes.
func readDocument(r io.Reader, m *member, limit int64) ([]byte, error) {
	if m.size > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the limit of %d: %w", m.name, m.size, limit, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(r, m.size))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.name, readError(err))
	}
	if int64(len(b)) != m.size {
		return nil, fmt.Errorf("%s: %d of %d bytes: the archive is truncated: %w", m.name, len(b), m.size, io.ErrUnexpectedEOF)
	}
	return b, nil
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// ingestMember writes a member from r and records its digest.
func (im *importer) ingestMember(ctx context.Context, m *member, r io.Reader) error {
	b := newBlob("tar-"+m.name, m.name, m.digest, m.size, r)
	if err := im.write(ctx, b); err != nil {
		return err
	}
	m.done = true
	if m.digest == "" {
		m.digest = b.sum
		if _, ok := im.digests[b.sum]; !ok {
			im.digests[b.sum] = m
		}
	} else if _, ok := im.digests[m.digest]; !ok {
		im.digests[m.digest] = m
	}
	if m.head == nil {
		m.head = b.head
	}
	return nil
}

// write hands b to the ingester and verifies whatever it did not read.
func (im *importer) write(ctx context.Context, b *Blob) error {
	err := im.ing.Ingest(ctx, b)
	if b.err != nil {
		return b.err
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", b.what(), err)
	}
	if _, err := io.Copy(io.Discard, b); err != nil {
		return err
	}
	if !im.written[b.sum] {
		im.written[b.sum] = true
		im.res.Blobs = append(im.res.Blobs, ocispec.Descriptor{Digest: b.sum, Size: b.Size})
	}
	return nil
}

// writeDocument writes a document made on import (or index.json).
func (im *importer) writeDocument(ctx context.Context, ref string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	if im.written[d] {
		return d, nil
	}
	if ref == "" {
		ref = "manifest-" + d.String()
	}
	return d, im.write(ctx, newBlob(ref, "", d, int64(len(b)), bytes.NewReader(b)))
}

// resolve follows symbolic links to a regular member.
func (im *importer) resolve(name string) (*member, error) {
	clean, err := memberName(name)
	if err != nil {
		return nil, err
	}
	for range 8 {
		m := im.members[clean]
		if m == nil || m.link == "" {
			return m, nil
		}
		clean = m.link
	}
	return nil, fmt.Errorf("archive member %q: too many levels of links: %w", name, errdefs.ErrInvalidArgument)
}

// plan is what an archive's images need.
type plan struct {
	graph  *Graph               // the blobs the selected images need (OCI)
	roots  []ocispec.Descriptor // the selected entries of index.json (OCI)
	docker []*dockerImage       // the selected images of manifest.json (docker)
	needed []*member            // the members to write
}

type dockerImage struct {
	names    []string
	config   *member
	layers   []*member
	platform ocispec.Platform
}

func (im *importer) plan(ctx context.Context) (*plan, error) {
	switch {
	case im.layout != nil || (im.indexJSON != nil && !im.hasDocker):
		if im.layout != nil && im.layout.Version != ocispec.ImageLayoutVersion {
			return nil, fmt.Errorf("oci-layout: unsupported version %q (want %s): %w", im.layout.Version, ocispec.ImageLayoutVersion, errdefs.ErrInvalidArgument)
		}
		if im.indexJSON == nil {
			return nil, fmt.Errorf("OCI image layout without index.json: %w", errdefs.ErrInvalidArgument)
		}
		im.res.Format = "oci"
		return im.planOCI(ctx)
	case im.hasDocker:
		im.res.Format = "docker"
		return im.planDocker()
	}
	return nil, fmt.Errorf("not an image archive: it has neither oci-layout and index.json (OCI image layout) nor manifest.json (docker save): %w", errdefs.ErrInvalidArgument)
}

// fetch serves the documents held in memory to Graph.Walk.
func (im *importer) fetch(_ context.Context, desc ocispec.Descriptor) ([]byte, error) {
	m := im.digests[desc.Digest]
	if m == nil {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	if m.doc == nil {
		if m.size > MaxDocumentSize {
			return nil, &TooLargeError{Desc: desc, Size: m.size}
		}
		return nil, fmt.Errorf("blob %s (archive member %q) is not a JSON document: %w", desc.Digest, m.name, errdefs.ErrInvalidArgument)
	}
	return m.doc, nil
}

func (im *importer) indexDescriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(im.indexJSON), Size: int64(len(im.indexJSON))}
}

func (im *importer) planOCI(ctx context.Context) (*plan, error) {
	desc := im.indexDescriptor()
	idx, err := ParseIndex(im.indexJSON, desc)
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("index.json lists no image: %w", errdefs.ErrInvalidArgument)
	}
	roots, err := selectManifests(desc, idx.Manifests, im.sel, true)
	if err != nil {
		var nm *NoMatchError
		if errors.As(err, &nm) {
			nm.Index = ""
		}
		return nil, err
	}
	p := &plan{graph: &Graph{}, roots: roots}
	for _, root := range roots {
		if err := p.graph.Walk(ctx, im.fetch, root, im.sel); err != nil {
			return nil, im.advise(ctx, err, idx.Manifests)
		}
	}
	for _, n := range p.graph.Nodes {
		m := im.digests[n.Desc.Digest]
		if m == nil {
			if n.Kind == KindLayer && isForeignLayer(n.Desc) {
				continue
			}
			return nil, im.advise(ctx, &MissingBlobError{Desc: n.Desc, Owner: n.Owner, Platform: n.Platform}, idx.Manifests)
		}
		if m.size != n.Desc.Size {
			return nil, &SizeMismatchError{Desc: n.Desc, Owner: n.Owner, Size: m.size}
		}
		p.needed = append(p.needed, m)
	}
	return p, nil
}

// advise adds to a missing blob error which flag helps: the platforms whose
// blobs are all in the archive.
func (im *importer) advise(ctx context.Context, err error, roots []ocispec.Descriptor) error {
	var mb *MissingBlobError
	if !errors.As(err, &mb) {
		return err
	}
	complete := im.completePlatforms(ctx, roots)
	switch {
	case len(complete) > 0 && im.opts.AllPlatforms:
		mb.Advice = fmt.Sprintf("import one platform with --platform %s (not --all-platforms), or use an archive made with all platforms", complete[0])
	case len(complete) > 0:
		mb.Advice = fmt.Sprintf("import a platform the archive has all of with --platform %s (it has: %s), or use an archive made with all platforms", complete[0], strings.Join(complete, ", "))
	default:
		mb.Advice = "the archive is incomplete: make it again with all the image's blobs (ctr images export --all-platforms, docker save)"
	}
	return mb
}

// completePlatforms lists the platforms whose manifests, configs and layers
// are all in the archive.
func (im *importer) completePlatforms(ctx context.Context, roots []ocispec.Descriptor) []string {
	var out []string
	seen := map[string]bool{}
	var candidates []ocispec.Platform
	var collect func(desc ocispec.Descriptor, depth int)
	collect = func(desc ocispec.Descriptor, depth int) {
		if depth > maxDepth {
			return
		}
		if desc.Platform != nil && desc.Platform.OS != "" && desc.Platform.OS != "unknown" {
			candidates = append(candidates, *desc.Platform)
		}
		if !IsIndexType(desc.MediaType) {
			return
		}
		b, err := im.fetch(ctx, desc)
		if err != nil {
			return
		}
		idx, err := ParseIndex(b, desc)
		if err != nil {
			return
		}
		for _, m := range idx.Manifests {
			collect(m, depth+1)
		}
	}
	for _, r := range roots {
		collect(r, 0)
	}
	for _, p := range candidates {
		name := platforms.Format(p)
		if seen[name] {
			continue
		}
		seen[name] = true
		sel := Selection{Platform: platforms.OnlyStrict(p), Name: name}
		ok := true
		for _, r := range roots {
			if r.Platform != nil && !sel.Platform.Match(*r.Platform) {
				continue
			}
			var g Graph
			if err := g.Walk(ctx, im.fetch, r, sel); err != nil {
				var nm *NoMatchError
				if errors.As(err, &nm) {
					continue
				}
				ok = false
				break
			}
			for _, n := range g.Nodes {
				if im.digests[n.Desc.Digest] == nil && !(n.Kind == KindLayer && isForeignLayer(n.Desc)) {
					ok = false
				}
			}
		}
		if ok {
			out = append(out, name)
		}
	}
	return out
}

func (im *importer) planDocker() (*plan, error) {
	p := &plan{}
	var others []string
	for i, e := range im.docker {
		what := fmt.Sprintf("image %d of manifest.json", i)
		if len(e.RepoTags) > 0 {
			what = fmt.Sprintf("image %s of manifest.json", strings.Join(e.RepoTags, ", "))
		}
		cfg, err := im.resolve(e.Config)
		if err != nil {
			return nil, fmt.Errorf("%s: config: %w", what, err)
		}
		if cfg == nil {
			return nil, fmt.Errorf("%s: its config %q is not in the archive: %w", what, e.Config, errdefs.ErrNotFound)
		}
		if cfg.doc == nil {
			if cfg.size > MaxDocumentSize {
				return nil, &TooLargeError{Desc: ocispec.Descriptor{Digest: cfg.digest}, Kind: KindConfig, Size: cfg.size}
			}
			return nil, fmt.Errorf("%s: its config %q is not a JSON document: %w", what, e.Config, errdefs.ErrInvalidArgument)
		}
		plat, err := ConfigPlatform(cfg.doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if im.sel.Platform != nil && !im.sel.Platform.Match(plat) {
			others = append(others, platforms.Format(plat))
			continue
		}
		di := &dockerImage{config: cfg, platform: plat}
		for _, tag := range e.RepoTags {
			name, err := NormalizeReference(tag)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			di.names = append(di.names, name)
		}
		p.needed = append(p.needed, cfg)
		for j, l := range e.Layers {
			m, err := im.resolve(l)
			if err != nil {
				return nil, fmt.Errorf("%s: layer %d: %w", what, j, err)
			}
			if m == nil {
				return nil, fmt.Errorf("%s: its layer %d %q is not in the archive (an incomplete docker save?): %w", what, j, l, errdefs.ErrNotFound)
			}
			di.layers = append(di.layers, m)
			p.needed = append(p.needed, m)
		}
		p.docker = append(p.docker, di)
	}
	if len(im.docker) == 0 {
		return nil, fmt.Errorf("manifest.json lists no image: %w", errdefs.ErrInvalidArgument)
	}
	if len(p.docker) == 0 {
		slices.Sort(others)
		return nil, &NoMatchError{Wanted: im.sel.Name, Available: slices.Compact(others)}
	}
	return p, nil
}

// planned is the descriptors of the blobs a plan writes from the archive (and, of an
// OCI layout, index.json; not the documents made for a docker archive).
func (im *importer) planned(p *plan) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	seen := map[*member]bool{}
	for _, m := range p.needed {
		if !seen[m] {
			seen[m] = true
			out = append(out, ocispec.Descriptor{Digest: m.digest, Size: m.size})
		}
	}
	if im.res.Format == "oci" {
		out = append(out, im.indexDescriptor())
	}
	return out
}

// ingestPlanned reads the archive again and writes the members planned.
func (im *importer) ingestPlanned(ctx context.Context, tr *tar.Reader, p *plan) error {
	want := map[string]*member{}
	for _, m := range p.needed {
		want[m.name] = m
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return readError(err)
		}
		name, err := memberName(hdr.Name)
		if err != nil {
			return err
		}
		m := want[name]
		if m == nil || m.done || (hdr.Typeflag != tar.TypeReg && hdr.Typeflag != '\x00') {
			continue
		}
		if hdr.Size != m.size {
			return fmt.Errorf("archive member %q changed while it was read: %w", name, errdefs.ErrAborted)
		}
		if err := im.ingestMember(ctx, m, tr); err != nil {
			return err
		}
	}
	for _, m := range p.needed {
		if !m.done {
			return fmt.Errorf("archive member %q vanished while the archive was read: %w", m.name, errdefs.ErrAborted)
		}
	}
	return nil
}

// finish writes what import makes (index.json as a blob, docker's
// manifests and index), and lists the labels and images.
func (im *importer) finish(ctx context.Context, p *plan) (*Result, error) {
	if im.res.Format == "docker" {
		if err := im.finishDocker(ctx, p); err != nil {
			return nil, err
		}
		return &im.res, nil
	}
	index := im.indexDescriptor()
	if _, err := im.writeDocument(ctx, "tar-"+ocispec.ImageIndexFile, im.indexJSON); err != nil {
		return nil, err
	}
	im.res.Index = index
	im.res.Labels = append(im.res.Labels, Label{Digest: index.Digest, Labels: GCLabels(p.roots)})
	for _, n := range p.graph.Nodes {
		if l := GCLabels(n.Children); l != nil {
			im.res.Labels = append(im.res.Labels, Label{Digest: n.Desc.Digest, Labels: l})
		}
	}
	if im.opts.IndexName != "" {
		im.res.Images = append(im.res.Images, Image{Name: im.opts.IndexName, Target: index})
	}
	for _, r := range p.roots {
		name, warning := imageName(r, im.opts.BaseName)
		if warning != "" {
			im.res.Warnings = append(im.res.Warnings, warning)
		}
		if name != "" {
			im.res.Images = append(im.res.Images, Image{Name: name, Target: r})
		}
	}
	return &im.res, nil
}

// imageName names an entry of index.json as containerd does: the
// annotation io.containerd.image.name, else the OCI ref name when it is a
// full reference, else BaseName:<ref name>.
func imageName(desc ocispec.Descriptor, base string) (name, warning string) {
	if n := desc.Annotations[AnnotationImageName]; n != "" {
		return n, ""
	}
	ref := desc.Annotations[ocispec.AnnotationRefName]
	switch {
	case ref == "":
		return "", ""
	case strings.ContainsAny(ref, "/:@"):
		return ref, ""
	case base != "":
		return base + ":" + ref, ""
	}
	return "", fmt.Sprintf("manifest %s has the tag %q but no image name: pass --base-name REPOSITORY to name it REPOSITORY:%s", desc.Digest, ref, ref)
}

// layerMediaType is the docker media type of a layer file, from its first
// bytes, as containerd's importer chooses it.
func layerMediaType(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b, 0x08}):
		return MediaTypeDockerLayerGzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return ocispec.MediaTypeImageLayerZstd
	}
	return MediaTypeDockerLayer
}

// dockerManifest is a docker schema 2 manifest, its fields in containerd's
// order so that the digests are those ctr makes.
type dockerManifest struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	Config        ocispec.Descriptor   `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
}

func (im *importer) finishDocker(ctx context.Context, p *plan) error {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}}
	for _, di := range p.docker {
		m := dockerManifest{
			SchemaVersion: 2,
			MediaType:     MediaTypeDockerManifest,
			Config:        ocispec.Descriptor{MediaType: MediaTypeDockerConfig, Digest: di.config.digest, Size: di.config.size},
			Layers:        make([]ocispec.Descriptor, 0, len(di.layers)),
		}
		for _, l := range di.layers {
			m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: layerMediaType(l.head), Digest: l.digest, Size: l.size})
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		d, err := im.writeDocument(ctx, "", b)
		if err != nil {
			return err
		}
		plat := di.platform
		desc := ocispec.Descriptor{MediaType: MediaTypeDockerManifest, Digest: d, Size: int64(len(b)), Platform: &plat}
		im.res.Labels = append(im.res.Labels, Label{Digest: d, Labels: GCLabels(append([]ocispec.Descriptor{m.Config}, m.Layers...))})
		if len(di.names) == 0 {
			idx.Manifests = append(idx.Manifests, desc)
			continue
		}
		for _, name := range di.names {
			named := desc
			named.Annotations = map[string]string{AnnotationImageName: name, ocispec.AnnotationRefName: refName(name)}
			idx.Manifests = append(idx.Manifests, named)
			im.res.Images = append(im.res.Images, Image{Name: name, Target: named})
		}
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	d, err := im.writeDocument(ctx, "", b)
	if err != nil {
		return err
	}
	im.res.Index = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(b))}
	im.res.Labels = append([]Label{{Digest: d, Labels: GCLabels(idx.Manifests)}}, im.res.Labels...)
	if im.opts.IndexName != "" {
		im.res.Images = append([]Image{{Name: im.opts.IndexName, Target: im.res.Index}}, im.res.Images...)
	}
	return nil
}
