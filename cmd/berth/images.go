package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/imagearchive"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// importUnpack, when set (by the code that unpacks layers into snapshots), unpacks the
// images an import created, unless --no-unpack; ctx carries the import's lease. While it
// is nil, import stores the content only and its help says so.
var importUnpack func(c *cli.Context, ctx context.Context, cl *client, images []imagearchive.Image) error

// imageSubcommands lets other command groups add subcommands to images (mount, unmount).
var imageSubcommands []func() []*cli.Command

func imagesCommand() *cli.Command {
	unpackDoc := `Unpacking: this berth does not unpack layers into snapshots yet, so import stores the
	content only, as with --no-unpack (accepted for ctr's sake); ctr unpacks such an image when it
	runs it.`
	importFlags := []cli.Flag{
		platformFlag(),
		allPlatformsFlag(),
		&cli.StringFlag{Name: "index-name", Usage: "also name the archive's whole index `NAME` (all platforms it lists)"},
		&cli.StringFlag{Name: "base-name", Usage: "name manifests whose ref name is only a tag `REPOSITORY`:TAG"},
		&cli.BoolFlag{Name: "no-unpack", Usage: "only store the content; do not unpack layers into snapshots"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the names of the images imported"},
	}
	if importUnpack != nil {
		unpackDoc = `Unpacking: the layers of each image are unpacked into the snapshotter (--snapshotter, else
	the namespace's default, else overlayfs) unless --no-unpack.`
		importFlags = append(importFlags, &cli.StringFlag{Name: "snapshotter", Usage: "unpack into snapshotter `NAME`",
			EnvVars: []string{"BERTH_SNAPSHOTTER", "CONTAINERD_SNAPSHOTTER"}})
	}
	cmd := &cli.Command{
		Name:    "images",
		Aliases: []string{"image", "i"},
		Usage:   "manage images: names for manifests and indexes in the content store",
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list images: REF TYPE DIGEST SIZE PLATFORMS LABELS",
				ArgsUsage: "[FILTER…]",
				Description: `SIZE is that of the target, manifest, config and layers for this host's platform.
	Filters use containerd's filter language over name, target.digest, target.mediatype and labels,
	e.g. name~=busybox or labels.team==web.`,
				Flags:  []cli.Flag{quietFlag(), jsonFlag()},
				Action: imagesList,
			},
			{
				Name:      "import",
				Usage:     "import images from a tar archive (OCI image layout or docker save)",
				ArgsUsage: "FILE|-",
				Description: `Reads an archive of ctr images export, docker save (any version), buildx's oci
	exporter or skopeo's oci-archive, plain or gzip-compressed, from FILE or stdin (-), writes its
	blobs under a lease and creates or updates the images it names: the annotation
	io.containerd.image.name, else org.opencontainers.image.ref.name when it is a full reference
	(a bare tag needs --base-name), or docker's RepoTags (normalized: busybox:1 becomes
	docker.io/library/busybox:1).

	Platforms: of a multi-platform image only the manifest that best matches this host (or
	--platform) is imported, so the archive need not hold the others; --all-platforms takes all,
	and then needs all their blobs. Every blob is checked against its digest; a blob the archive
	lacks is named, with the flag that helps. A FILE is read twice (first its indexes and
	manifests), so that nothing is written when blobs are missing; stdin is read once.

	` + unpackDoc,
				Flags:  importFlags,
				Action: imagesImport,
			},
			{
				Name:      "export",
				Usage:     "write images to a tar archive that ctr images import and docker load read",
				ArgsUsage: "FILE|- IMAGE [IMAGE…]",
				Description: `The archive is an OCI image layout: index.json names each image (annotations
	io.containerd.image.name and org.opencontainers.image.ref.name) with its target digest
	unchanged; blobs/sha256/ holds the blobs of the platforms exported (this host's, --platform, or
	--all-platforms); manifest.json lists one manifest per image for docker load. FILE is written
	whole or not at all; - writes to stdout.`,
				Flags: []cli.Flag{
					platformFlag(),
					allPlatformsFlag(),
					&cli.BoolFlag{Name: "skip-manifest-json", Usage: "leave out docker's manifest.json"},
				},
				Action: imagesExport,
			},
			{
				Name:      "inspect",
				Usage:     "print an image, its index, manifest and config as JSON",
				ArgsUsage: "IMAGE",
				Flags:     []cli.Flag{platformFlag()},
				Action:    imagesInspect,
			},
			{
				Name:      "tag",
				Usage:     "give an image more names",
				ArgsUsage: "SOURCE TARGET [TARGET…]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "point TARGET at SOURCE's content even if TARGET exists"},
				},
				Action: imagesTag,
			},
			{
				Name:      "label",
				Usage:     "set labels of an image (KEY= removes one); without labels, print them",
				ArgsUsage: "IMAGE [KEY=VALUE…]",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    imagesLabel,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove images (their content goes once nothing else refers to it)",
				ArgsUsage: "IMAGE [IMAGE…]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "sync", Usage: "wait until garbage collection has removed the content"},
				},
				Action: imagesRemove,
			},
		},
	}
	for _, more := range imageSubcommands {
		cmd.Subcommands = append(cmd.Subcommands, more()...)
	}
	return cmd
}

func platformFlag() cli.Flag {
	return &cli.StringFlag{Name: "platform", Usage: "the platform of multi-platform images, e.g. linux/arm64 (default: this host's)"}
}

func allPlatformsFlag() cli.Flag {
	return &cli.BoolFlag{Name: "all-platforms", Usage: "every platform of multi-platform images"}
}

// platformChoice reads --platform and --all-platforms: a nil matcher is this host's
// platform, unless all.
func platformChoice(c *cli.Context) (match platforms.MatchComparer, name string, all bool, err error) {
	p := c.String("platform")
	all = c.Bool("all-platforms")
	if all && p != "" {
		return nil, "", false, usagef(c, "--platform and --all-platforms exclude each other")
	}
	if p == "" {
		return nil, "", all, nil
	}
	spec, err := platforms.Parse(p)
	if err != nil {
		return nil, "", false, usagef(c, "invalid --platform %q: %v (e.g. linux/amd64, linux/arm64, linux/arm/v7)", p, err)
	}
	return platforms.Only(spec), platforms.Format(platforms.Normalize(spec)), false, nil
}

func imageObject(cl *client, name string) object { return cl.object("image", name) }

func targetToProto(d ocispec.Descriptor) *types.Descriptor {
	return &types.Descriptor{MediaType: d.MediaType, Digest: d.Digest.String(), Size: d.Size, Annotations: d.Annotations}
}

func targetFromProto(d *types.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.GetMediaType(), Digest: digest.Digest(d.GetDigest()), Size: d.GetSize(), Annotations: d.GetAnnotations()}
}

// imageView is an image as --json and inspect print it.
type imageView struct {
	Name      string            `json:"name"`
	Target    descriptorView    `json:"target"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
	UpdatedAt *time.Time        `json:"updated_at,omitempty"`
	Size      *int64            `json:"size,omitempty"`
	Platforms []string          `json:"platforms,omitempty"`
}

type descriptorView struct {
	MediaType   string            `json:"media_type"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func newImageView(img *imagesapi.Image) imageView {
	t := img.GetTarget()
	return imageView{
		Name:      img.GetName(),
		Target:    descriptorView{MediaType: t.GetMediaType(), Digest: t.GetDigest(), Size: t.GetSize(), Annotations: t.GetAnnotations()},
		Labels:    img.GetLabels(),
		CreatedAt: jsonTime(img.GetCreatedAt()),
		UpdatedAt: jsonTime(img.GetUpdatedAt()),
	}
}

// documents fetches indexes, manifests and configs through Content.Read, each once,
// bounded by imagearchive.MaxDocumentSize.
func documents(api contentapi.ContentClient) imagearchive.Fetcher {
	cache := map[digest.Digest][]byte{}
	return func(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
		if b, ok := cache[desc.Digest]; ok {
			return b, nil
		}
		if desc.Size > imagearchive.MaxDocumentSize {
			return nil, &imagearchive.TooLargeError{Desc: desc, Size: desc.Size}
		}
		rc, err := contentReader{api: api}.Open(ctx, desc)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, imagearchive.MaxDocumentSize+1))
		if err != nil {
			return nil, err
		}
		if len(b) > imagearchive.MaxDocumentSize {
			return nil, &imagearchive.TooLargeError{Desc: desc, Size: int64(len(b))}
		}
		if digest.FromBytes(b) != desc.Digest {
			return nil, fmt.Errorf("blob %s: berthd sent bytes of another digest (the blob is damaged): %w", desc.Digest, errdefs.ErrDataLoss)
		}
		cache[desc.Digest] = b
		return b, nil
	}
}

// imageSize is the size of target and what it needs for this host's platform, as ctr
// computes it; -1 when content is missing.
func imageSize(ctx context.Context, fetch imagearchive.Fetcher, target ocispec.Descriptor) int64 {
	var g imagearchive.Graph
	sel := imagearchive.Selection{Platform: platforms.Default(), Name: platforms.DefaultString()}
	if err := g.Walk(ctx, fetch, target, sel); err != nil {
		var nm *imagearchive.NoMatchError
		if errors.As(err, &nm) {
			return target.Size
		}
		return -1
	}
	return g.Size()
}

// imagePlatforms lists the platforms an image has: those of an index's manifests, or that
// of a manifest's config.
func imagePlatforms(ctx context.Context, fetch imagearchive.Fetcher, target ocispec.Descriptor, depth int) ([]string, error) {
	switch {
	case depth > 4:
		return nil, nil
	case target.Platform != nil:
		if target.Platform.OS == "unknown" {
			return nil, nil
		}
		return []string{platforms.Format(*target.Platform)}, nil
	case imagearchive.IsIndexType(target.MediaType):
		b, err := fetch(ctx, target)
		if err != nil {
			return nil, err
		}
		idx, err := imagearchive.ParseIndex(b, target)
		if err != nil {
			return nil, err
		}
		var out []string
		seen := map[string]bool{}
		for _, m := range idx.Manifests {
			ps, err := imagePlatforms(ctx, fetch, m, depth+1)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
		return out, nil
	case imagearchive.IsManifestType(target.MediaType):
		b, err := fetch(ctx, target)
		if err != nil {
			return nil, err
		}
		m, err := imagearchive.ParseManifest(b, target)
		if err != nil {
			return nil, err
		}
		if !imagearchive.IsConfigType(m.Config.MediaType) {
			return nil, nil
		}
		cfg, err := fetch(ctx, m.Config)
		if err != nil {
			return nil, err
		}
		p, err := imagearchive.ConfigPlatform(cfg)
		if err != nil {
			return nil, err
		}
		return []string{platforms.Format(p)}, nil
	}
	return nil, nil
}

// imagesList calls Images.List, then reads each image's index, manifest and config (as ctr
// does) for its size and platforms.
func imagesList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := imagesapi.NewImagesClient(cl.conn).List(ctx, &imagesapi.ListImagesRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "list", cl.object("images", ""))
	}
	w := c.App.Writer
	if c.Bool("quiet") && !wantJSON(c) {
		for _, img := range resp.GetImages() {
			fmt.Fprintln(w, img.GetName())
		}
		return nil
	}
	fetch := documents(contentapi.NewContentClient(cl.conn))
	views := make([]imageView, 0, len(resp.GetImages()))
	for _, img := range resp.GetImages() {
		v := newImageView(img)
		target := targetFromProto(img.GetTarget())
		if size := imageSize(ctx, fetch, target); size >= 0 {
			v.Size = &size
		}
		v.Platforms, _ = imagePlatforms(ctx, fetch, target, 0)
		views = append(views, v)
	}
	if wantJSON(c) {
		return printJSON(w, views)
	}
	t := newTable(w, "REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS")
	for _, v := range views {
		size := ""
		if v.Size != nil {
			size = byteSize(*v.Size)
		}
		t.row(v.Name, v.Target.MediaType, v.Target.Digest, size, strings.Join(v.Platforms, ","), formatLabels(v.Labels))
	}
	return t.flush()
}

// archiveIngester writes the blobs of an archive with Content.Write, under the import's
// lease, and shows progress.
type archiveIngester struct {
	cl       *client
	api      contentapi.ContentClient
	progress *importProgress
}

func (in *archiveIngester) Ingest(ctx context.Context, b *imagearchive.Blob) error {
	in.progress.begin(b)
	_, exists, err := writeContent(ctx, in.api, b.Ref, b, b.Size, b.Digest, in.progress.add)
	in.progress.end(b, exists, err)
	if err != nil {
		var ce *contentError
		if errors.As(err, &ce) {
			return err
		}
		id := b.Digest.String()
		if id == "" {
			id = b.Name
		}
		return in.cl.fail(err, "write", contentObject(in.cl, id))
	}
	return nil
}

// imagesImport is ctr's images import over the API: Leases.Create → Content.Write of each
// blob → Content.Update of the gc.ref labels of indexes and manifests → Images.Update
// (target) or, when NotFound, Images.Create → Leases.Delete.
func imagesImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one archive FILE (or - for stdin)")
	}
	src := c.Args().First()
	match, platformName, all, err := platformChoice(c)
	if err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	what := "stdin"
	if src == "-" {
		if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
			return usagef(c, "refusing to read an archive from a terminal: pipe it in, or name a FILE")
		}
	} else {
		f, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("cannot open the archive: %w", err)
		}
		defer f.Close()
		r, what = f, src
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	lctx, release, err := holdLease(ctx, cl, 24*time.Hour)
	if err != nil {
		return err
	}
	defer release()

	progress := newImportProgress(c.App.Writer, c.Bool("quiet"))
	api := contentapi.NewContentClient(cl.conn)
	res, err := imagearchive.Import(lctx, r, &archiveIngester{cl: cl, api: api, progress: progress}, imagearchive.Options{
		Platform:     match,
		PlatformName: platformName,
		AllPlatforms: all,
		IndexName:    c.String("index-name"),
		BaseName:     c.String("base-name"),
		OnPlan:       progress.plan,
	})
	progress.finish()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("import %s: %w", what, err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "berth: warning: "+w)
	}
	if len(res.Images) == 0 {
		return fmt.Errorf("import %s: the archive names no image, so nothing would keep its blobs (they go with the import's lease): pass --index-name NAME, or --base-name REPOSITORY for tags without a repository", what)
	}
	for _, l := range res.Labels {
		if len(l.Labels) == 0 {
			continue
		}
		_, err := api.Update(lctx, &contentapi.UpdateRequest{
			Info:       &contentapi.Info{Digest: l.Digest.String(), Labels: l.Labels},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: labelPaths(l.Labels)},
		})
		if err != nil {
			return cl.fail(err, "label", contentObject(cl, l.Digest.String()))
		}
	}
	is := imagesapi.NewImagesClient(cl.conn)
	for _, img := range res.Images {
		image := &imagesapi.Image{Name: img.Name, Target: targetToProto(img.Target)}
		_, err := is.Update(lctx, &imagesapi.UpdateImageRequest{Image: image, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"target"}}})
		if err != nil && errdefs.IsNotFound(errgrpc.ToNative(err)) {
			_, err = is.Create(lctx, &imagesapi.CreateImageRequest{Image: image})
		}
		if err != nil {
			return cl.fail(err, "create", imageObject(cl, img.Name))
		}
	}
	if importUnpack != nil && !c.Bool("no-unpack") {
		images, notes := unpackable(lctx, documents(api), res.Images)
		if !c.Bool("quiet") {
			for _, n := range notes {
				fmt.Fprintln(c.App.Writer, n)
			}
		}
		if len(images) > 0 {
			if err := importUnpack(c, lctx, cl, images); err != nil {
				return err
			}
		}
	}
	for _, img := range res.Images {
		if c.Bool("quiet") {
			fmt.Fprintln(c.App.Writer, img.Name)
		} else {
			fmt.Fprintf(c.App.Writer, "imported %s (%s)\n", img.Name, img.Target.Digest)
		}
	}
	return nil
}

// unpackable picks the images an import can unpack: those whose manifest for this host's
// platform it imported (not the images of --platform for another one, nor those of
// --all-platforms that have no manifest for this host). notes say why the others are not.
func unpackable(ctx context.Context, fetch imagearchive.Fetcher, images []imagearchive.Image) ([]imagearchive.Image, []string) {
	host := imagearchive.Selection{Platform: platforms.Default(), Name: platforms.DefaultString()}
	var out []imagearchive.Image
	var notes []string
	for _, img := range images {
		var g imagearchive.Graph
		if err := g.Walk(ctx, fetch, img.Target, host); err != nil || len(g.Manifests()) == 0 {
			notes = append(notes, fmt.Sprintf("not unpacked: %s has no %s manifest imported (this host's platform)", img.Name, host.Name))
			continue
		}
		m := g.Manifests()[0]
		mf, err := imagearchive.ParseManifest(m.Doc, m.Desc)
		if err != nil || !imagearchive.IsConfigType(mf.Config.MediaType) {
			notes = append(notes, fmt.Sprintf("not unpacked: %s is not a container image", img.Name))
			continue
		}
		cfg, err := fetch(ctx, mf.Config)
		if err != nil {
			notes = append(notes, fmt.Sprintf("not unpacked: %s: config %s: %v", img.Name, mf.Config.Digest, err))
			continue
		}
		if p, err := imagearchive.ConfigPlatform(cfg); err != nil || !host.Platform.Match(p) {
			notes = append(notes, fmt.Sprintf("not unpacked: %s is for %s, not this host's %s", img.Name, platforms.Format(p), host.Name))
			continue
		}
		out = append(out, img)
	}
	return out, notes
}

// importProgress shows an import: on a terminal a status line (the blob being written,
// bytes done of the blob and of all, the rate) and a line per blob written; elsewhere
// only the lines; nothing with --quiet.
type importProgress struct {
	w       io.Writer
	tty     bool
	quiet   bool
	total   int64 // the bytes planned, 0 when unknown (stdin)
	blobs   int   // the blobs planned
	done    int64 // bytes written or found present
	n       int   // blobs handled
	cur     *imagearchive.Blob
	curDone int64
	started time.Time
	drawn   time.Time
	status  bool // a status line is on the terminal
}

func newImportProgress(w io.Writer, quiet bool) *importProgress {
	p := &importProgress{w: w, quiet: quiet, started: time.Now()}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *importProgress) plan(blobs []ocispec.Descriptor) {
	p.blobs = len(blobs)
	for _, b := range blobs {
		p.total += b.Size
	}
}

func (p *importProgress) begin(b *imagearchive.Blob) {
	p.cur, p.curDone = b, 0
	p.draw(true)
}

func (p *importProgress) add(n int64) {
	p.curDone += n
	p.done += n
	p.draw(false)
}

// end closes a blob: a line "written|present DIGEST SIZE".
func (p *importProgress) end(b *imagearchive.Blob, present bool, err error) {
	if present {
		p.done += b.Size - p.curDone
	}
	p.n++
	p.cur = nil
	if p.quiet || err != nil {
		return
	}
	p.clear()
	id := b.Digest
	if id == "" {
		id = b.Sum()
	}
	name := id.String()
	if name == "" {
		name = b.Name
	}
	state := "written"
	if present {
		state = "present"
	}
	fmt.Fprintf(p.w, "%s %s %s\n", state, name, byteSize(b.Size))
}

func (p *importProgress) finish() { p.clear() }

func (p *importProgress) clear() {
	if p.status {
		fmt.Fprint(p.w, "\r\033[K")
		p.status = false
	}
}

// draw redraws the status line, at most ten times a second unless forced.
func (p *importProgress) draw(force bool) {
	if !p.tty || p.quiet || p.cur == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(p.drawn) < 100*time.Millisecond {
		return
	}
	p.drawn = now
	name := p.cur.Digest.Encoded()
	if name == "" {
		name = p.cur.Name
	}
	if len(name) > 12 {
		name = name[:12]
	}
	count, total := "", "?"
	if p.blobs > 0 {
		total = byteSize(p.total)
		if p.n < p.blobs {
			count = fmt.Sprintf("[%d/%d] ", p.n+1, p.blobs)
		}
	}
	rate := ""
	if secs := now.Sub(p.started).Seconds(); secs > 0.5 {
		rate = "  " + byteSize(int64(float64(p.done)/secs)) + "/s"
	}
	fmt.Fprintf(p.w, "\r\033[K%s%s %s/%s   total %s/%s%s", count, name, byteSize(p.curDone), byteSize(p.cur.Size), byteSize(p.done), total, rate)
	p.status = true
}

// imagesExport is ctr's images export: Images.Get of each image, Content.Read of its blobs.
func imagesExport(c *cli.Context) (err error) {
	if c.NArg() < 2 {
		return usagef(c, "expected an archive FILE (or - for stdout) and at least one IMAGE")
	}
	dst, names := c.Args().First(), c.Args().Tail()
	match, platformName, all, err := platformChoice(c)
	if err != nil {
		return err
	}
	var out io.Writer = c.App.Writer
	if dst == "-" {
		if f, ok := out.(*os.File); ok {
			if _, terr := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); terr == nil {
				return usagef(c, "refusing to write an archive to a terminal: redirect stdout, or name a FILE")
			}
		}
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	is := imagesapi.NewImagesClient(cl.conn)
	var images []imagearchive.Image
	for _, name := range names {
		resp, err := is.Get(ctx, &imagesapi.GetImageRequest{Name: name})
		if err != nil {
			return cl.fail(err, "get", imageObject(cl, name))
		}
		images = append(images, imagearchive.Image{Name: name, Target: targetFromProto(resp.GetImage().GetTarget())})
	}
	if dst != "-" {
		f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
		if err != nil {
			return fmt.Errorf("cannot create the archive: %w", err)
		}
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		out = f
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	err = imagearchive.Export(ctx, bw, contentReader{api: contentapi.NewContentClient(cl.conn)}, images, imagearchive.ExportOptions{
		Platform:           match,
		PlatformName:       platformName,
		AllPlatforms:       all,
		SkipDockerManifest: c.Bool("skip-manifest-json"),
		Source:             fmt.Sprintf("the content store (namespace %q)", cl.namespace),
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("export %s: %w", dst, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export %s: %w", dst, err)
	}
	if f, ok := out.(*os.File); ok && dst != "-" {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("export %s: %w", dst, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("export %s: %w", dst, err)
		}
		if err := os.Rename(f.Name(), dst); err != nil {
			return fmt.Errorf("export %s: %w", dst, err)
		}
	}
	return nil
}

// inspectView is what inspect prints.
type inspectView struct {
	Image    imageView       `json:"image"`
	Index    json.RawMessage `json:"index,omitempty"`
	Manifest json.RawMessage `json:"manifest,omitempty"`
	Config   json.RawMessage `json:"config,omitempty"`
}

// imagesInspect calls Images.Get and reads the image's index, the manifest for the
// platform and its config.
func imagesInspect(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one IMAGE")
	}
	name := c.Args().First()
	match, platformName, _, err := platformChoice(c)
	if err != nil {
		return err
	}
	if match == nil {
		match, platformName = platforms.Default(), platforms.DefaultString()
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := imagesapi.NewImagesClient(cl.conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return cl.fail(err, "get", imageObject(cl, name))
	}
	v := inspectView{Image: newImageView(resp.GetImage())}
	target := targetFromProto(resp.GetImage().GetTarget())
	fetch := documents(contentapi.NewContentClient(cl.conn))
	var g imagearchive.Graph
	if err := g.Walk(ctx, fetch, target, imagearchive.Selection{Platform: match, Name: platformName}); err != nil {
		var mb *imagearchive.MissingBlobError
		if errors.As(err, &mb) {
			mb.Source = fmt.Sprintf("the content store (namespace %q)", cl.namespace)
			mb.Advice = "import or pull the image again"
		}
		return fmt.Errorf("image %q: %w", name, err)
	}
	raw := func(b []byte) json.RawMessage {
		if json.Valid(b) {
			return b
		}
		s, _ := json.Marshal(string(b))
		return s
	}
	if n := g.Node(target.Digest); n != nil && n.Kind == imagearchive.KindIndex {
		v.Index = raw(n.Doc)
	}
	if ms := g.Manifests(); len(ms) > 0 {
		v.Manifest = raw(ms[0].Doc)
		m, err := imagearchive.ParseManifest(ms[0].Doc, ms[0].Desc)
		if err != nil {
			return fmt.Errorf("image %q: %w", name, err)
		}
		cfg, err := fetch(ctx, m.Config)
		if err != nil {
			return fmt.Errorf("image %q: config %s: %w", name, m.Config.Digest, err)
		}
		v.Config = raw(cfg)
	}
	return printJSON(c.App.Writer, v)
}

// imagesTag calls Images.Get for SOURCE and Images.Create for each TARGET (with --force,
// Images.Update of an existing TARGET's target).
func imagesTag(c *cli.Context) error {
	if err := requireArgs(c, 2, "a SOURCE image and at least one TARGET name"); err != nil {
		return err
	}
	src := c.Args().First()
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	is := imagesapi.NewImagesClient(cl.conn)
	resp, err := is.Get(ctx, &imagesapi.GetImageRequest{Name: src})
	if err != nil {
		return cl.fail(err, "get", imageObject(cl, src))
	}
	return forEach(c, c.Args().Tail(), func(dst string) error {
		image := &imagesapi.Image{Name: dst, Target: resp.GetImage().GetTarget(), Labels: resp.GetImage().GetLabels()}
		_, err := is.Create(ctx, &imagesapi.CreateImageRequest{Image: image})
		if err != nil && c.Bool("force") && errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
			_, err = is.Update(ctx, &imagesapi.UpdateImageRequest{Image: image, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"target"}}})
		}
		if err != nil {
			return cl.fail(err, "create", imageObject(cl, dst),
				when(errdefs.ErrAlreadyExists, fmt.Sprintf("already exists (pass --force to point it at %s)", src)))
		}
		fmt.Fprintln(c.App.Writer, dst)
		return nil
	})
}

// imagesLabel calls Images.Update with one update_mask path "labels.KEY" per label;
// without labels it prints the image's labels.
func imagesLabel(c *cli.Context) error {
	return labeler{
		what:   "an IMAGE",
		object: imageObject,
		get: func(ctx context.Context, cl *client, name string) (map[string]string, error) {
			resp, err := imagesapi.NewImagesClient(cl.conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
			return resp.GetImage().GetLabels(), err
		},
		update: func(ctx context.Context, cl *client, name string, labels map[string]string, mask *fieldmaskpb.FieldMask) error {
			_, err := imagesapi.NewImagesClient(cl.conn).Update(ctx, &imagesapi.UpdateImageRequest{
				Image: &imagesapi.Image{Name: name, Labels: labels}, UpdateMask: mask})
			return err
		},
	}.run(c)
}

// imagesRemove calls Images.Delete{name, sync} for each image.
func imagesRemove(c *cli.Context) error {
	return forEachArg(c, "at least one IMAGE", func(cl *client, ctx context.Context, name string) error {
		is := imagesapi.NewImagesClient(cl.conn)
		_, err := is.Delete(ctx, &imagesapi.DeleteImageRequest{Name: name, Sync: c.Bool("sync")})
		return cl.fail(err, "remove", imageObject(cl, name))
	})
}
