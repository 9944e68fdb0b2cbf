package main

// berth run: what ctr run does, client-side (containerd-api-surface.md §2.3):
//
//	Images.Get → Content.Read (index → host platform manifest → config) → chain ID of the
//	config's diff_ids → Snapshots.Stat(chain ID): committed
//	Leases.Create → Snapshots.Prepare(key ID, parent chain ID) → Containers.Create → Leases.Delete
//	Snapshots.Mounts(ID) → FIFOs → Tasks.Create{rootfs, FIFOs, terminal} → Wait ‖ Start
//	(-t: ResizePty now and on SIGWINCH; signals → Tasks.Kill) → exit → Tasks.Delete
//	--rm: Snapshots.Remove(ID) → Containers.Delete
//
// berth exits with the task's exit status and prints nothing of its own on the way.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/oci"
	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	specTypeURL    = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
	processTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
	runcOptionsURL = "containerd.runc.v1.Options"
	leaseHeader    = "containerd-lease"

	labelStopSignal     = "io.containerd.image.config.stop-signal"
	labelGCExpire       = "containerd.io/gc.expire"
	labelGCRoot         = "containerd.io/gc.root"
	labelDefaultSnapper = "containerd.io/defaults/snapshotter"
	defaultSnapshotter  = "overlayfs"
	defaultRuntime      = "io.containerd.runc.v2"

	// maxImageMetadata bounds the manifests, indexes and configs read from content.
	maxImageMetadata = 8 << 20
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a container from an unpacked image and wait for it",
		ArgsUsage: "IMAGE ID [COMMAND [ARG…]]",
		Description: `Creates container ID from IMAGE (a snapshot of the image's root filesystem, the
	image's Cmd, Entrypoint, Env, WorkingDir and User applied), starts its task with berth's
	stdin, stdout and stderr connected, waits for it and exits with its exit status.
	COMMAND replaces the image's Entrypoint and Cmd, as in ctr. The image must be unpacked
	(berth images import and ctr images import/pull unpack). Flags go before IMAGE.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the task and return; its FIFOs stay for the shim (attach with: berth tasks attach ID)"},
			&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "give the process a terminal, and put this one in raw mode"},
			&cli.BoolFlag{Name: "rm", Usage: "remove the container and its snapshot when the task has exited"},
			&cli.GenericFlag{Name: "env", Aliases: []string{"e"}, Usage: "set an environment variable `KEY=VALUE` (repeatable)", Value: &repeatedFlag{}},
			&cli.GenericFlag{Name: "label", Usage: "set a container label `KEY=VALUE` (repeatable)", Value: &repeatedFlag{}},
			&cli.GenericFlag{Name: "mount", Usage: "add a mount `type=bind,src=PATH,dst=PATH,options=rbind:ro` (repeatable)", Value: &repeatedFlag{}},
			&cli.BoolFlag{Name: "net-host", Usage: "use the host's network namespace"},
			&cli.StringFlag{Name: "cwd", Usage: "working `DIR` of the process (default: the image's, else /)"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER[:GROUP]` (names or numbers; default: the image's)"},
			&cli.StringFlag{Name: "hostname", Usage: "the container's host `NAME`"},
			&cli.BoolFlag{Name: "read-only", Usage: "mount the root filesystem read-only"},
			&cli.BoolFlag{Name: "null-io", Usage: "connect no streams: the task's input and output are discarded"},
			&cli.StringFlag{Name: "snapshotter", Usage: "snapshotter `NAME` (default: the namespace's default, else overlayfs)", EnvVars: []string{"BERTH_SNAPSHOTTER", "CONTAINERD_SNAPSHOTTER"}},
			&cli.StringFlag{Name: "runtime", Usage: "runtime `NAME`", Value: defaultRuntime},
			fifoDirFlag(),
		},
		Action: runAction,
	}
}

// repeatedFlag collects every occurrence of a flag as it is: urfave/cli's slices would split
// "type=bind,src=…" and "A=b,c" at the commas.
type repeatedFlag []string

func (r *repeatedFlag) Set(v string) error { *r = append(*r, v); return nil }
func (r *repeatedFlag) String() string     { return strings.Join(*r, " ") }

// repeated returns the values of a repeatedFlag.
func repeated(c *cli.Context, name string) []string {
	if r, ok := c.Generic(name).(*repeatedFlag); ok && r != nil {
		return *r
	}
	return nil
}

// exitProcess ends berth with a task's exit status (a variable for tests).
var exitProcess = os.Exit

// exitWith ends berth with status code, after the command has cleaned up; 0 returns.
func exitWith(code uint32) error {
	if code == 0 {
		return nil
	}
	if code > 255 {
		code = 255
	}
	exitProcess(int(code))
	return nil
}

// runOptions are berth run's parsed command line.
type runOptions struct {
	image, id   string
	args        []string
	detach, tty bool
	remove      bool
	env         []string
	labels      map[string]string
	mounts      []specs.Mount
	netHost     bool
	cwd, user   string
	hostname    string
	readOnly    bool
	nullIO      bool
	runtime     string
	fifoDir     string
}

func parseRunOptions(c *cli.Context) (*runOptions, error) {
	if err := requireArgs(c, 2, "an IMAGE and a container ID"); err != nil {
		return nil, err
	}
	o := &runOptions{
		image:    c.Args().Get(0),
		id:       c.Args().Get(1),
		args:     c.Args().Slice()[2:],
		detach:   c.Bool("detach"),
		tty:      c.Bool("tty"),
		remove:   c.Bool("rm"),
		netHost:  c.Bool("net-host"),
		cwd:      c.String("cwd"),
		user:     c.String("user"),
		hostname: c.String("hostname"),
		readOnly: c.Bool("read-only"),
		nullIO:   c.Bool("null-io"),
		runtime:  c.String("runtime"),
		fifoDir:  c.String("fifo-dir"),
	}
	if err := identifiers.Validate(o.id); err != nil {
		return nil, usagef(c, "invalid container ID %q: %v", o.id, err)
	}
	if o.detach && o.remove {
		return nil, usagef(c, "--detach and --rm cannot be used together (remove a detached container with: berth tasks rm -f %s && berth containers rm %s)", o.id, o.id)
	}
	if o.tty && o.nullIO {
		return nil, usagef(c, "--tty and --null-io cannot be used together")
	}
	if o.tty && !o.detach && !isTerminal(os.Stdin) {
		return nil, usagef(c, "--tty needs a terminal on stdin (run berth from a terminal, or drop -t)")
	}
	if o.runtime == "" {
		return nil, usagef(c, "empty --runtime")
	}
	for _, e := range repeated(c, "env") {
		if k, _, _ := strings.Cut(e, "="); k == "" {
			return nil, usagef(c, "invalid --env %q: expected KEY=VALUE", e)
		}
		o.env = append(o.env, e)
	}
	labels, err := parseLabels(repeated(c, "label"))
	if err != nil {
		return nil, usagef(c, "--label: %v", err)
	}
	o.labels = labels
	for _, m := range repeated(c, "mount") {
		sm, err := parseMountFlag(m)
		if err != nil {
			return nil, usagef(c, "%v", err)
		}
		o.mounts = append(o.mounts, sm)
	}
	return o, nil
}

// parseMountFlag parses ctr's --mount syntax: type=bind,src=/a,dst=/b,options=rbind:ro.
func parseMountFlag(s string) (specs.Mount, error) {
	var m specs.Mount
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return m, fmt.Errorf("invalid --mount %q: %q is not KEY=VALUE (keys: type, src, dst, options)", s, field)
		}
		switch k {
		case "type":
			m.Type = v
		case "source", "src":
			m.Source = v
		case "destination", "dst", "target":
			m.Destination = v
		case "options":
			m.Options = strings.Split(v, ":")
		default:
			return m, fmt.Errorf("invalid --mount %q: unknown key %q (keys: type, src, dst, options)", s, k)
		}
	}
	if m.Type == "" {
		m.Type = "bind"
	}
	if m.Destination == "" || !filepath.IsAbs(m.Destination) {
		return m, fmt.Errorf("invalid --mount %q: dst must be an absolute path in the container", s)
	}
	if m.Type == "bind" {
		if m.Source == "" {
			return m, fmt.Errorf("invalid --mount %q: a bind mount needs src", s)
		}
		bind := false
		for _, o := range m.Options {
			bind = bind || o == "bind" || o == "rbind"
		}
		if !bind {
			m.Options = append(m.Options, "rbind")
		}
	}
	return m, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// withStatus connects and runs fn with a context that an interrupt does
// not cancel (fn forwards signals to the task), then exits with the status
// fn returns.
func withStatus(c *cli.Context, fn func(ctx context.Context, cl *client) (uint32, error)) error {
	code, err := func() (uint32, error) {
		cl, ctx, err := connect(c)
		if err != nil {
			return 0, err
		}
		defer cl.Close()
		return fn(context.WithoutCancel(ctx), cl)
	}()
	if err != nil {
		return err
	}
	return exitWith(code)
}

func runAction(c *cli.Context) error {
	o, err := parseRunOptions(c)
	if err != nil {
		return err
	}
	code, err := runContainer(c, o)
	if err != nil {
		return err
	}
	return exitWith(code)
}

// runContainer creates the container and runs its task; it returns the exit status.
func runContainer(c *cli.Context, o *runOptions) (uint32, error) {
	cl, ctx, err := connect(c)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	snapshotter, err := snapshotterFor(ctx, c, cl)
	if err != nil {
		return 0, err
	}
	img, err := resolveUnpackedImage(ctx, cl, o.image, snapshotter)
	if err != nil {
		return 0, err
	}
	ctr, err := createRunContainer(ctx, cl, o, img, snapshotter)
	if err != nil {
		return 0, err
	}
	// From here on an interrupt is the task's (forwarded to it), not the end of berth.
	ctx = context.WithoutCancel(ctx)
	removeContainer := func() error {
		if err := removeSnapshot(ctx, cl, snapshotter, o.id); err != nil {
			return err
		}
		_, err := containersapi.NewContainersClient(cl.conn).Delete(ctx, &containersapi.DeleteContainerRequest{ID: o.id})
		return cl.fail(err, "remove", cl.object("container", o.id))
	}
	code, err := startTask(ctx, cl, ctr, taskStart{
		detach: o.detach, nullIO: o.nullIO, fifoDir: o.fifoDir, stdout: c.App.Writer, stderr: c.App.ErrWriter,
	})
	if o.remove {
		if rerr := removeContainer(); rerr != nil && err == nil {
			err = rerr
		}
	}
	return code, err
}

// snapshotterFor is --snapshotter, else the namespace's default snapshotter label, else
// overlayfs (as ctr picks it).
func snapshotterFor(ctx context.Context, c *cli.Context, cl *client) (string, error) {
	if s := c.String("snapshotter"); s != "" {
		return s, nil
	}
	resp, err := namespacesapi.NewNamespacesClient(cl.conn).Get(ctx, &namespacesapi.GetNamespaceRequest{Name: cl.namespace})
	if err == nil {
		if s := resp.GetNamespace().GetLabels()[labelDefaultSnapper]; s != "" {
			return s, nil
		}
	} else if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return "", cl.fail(err, "get", namespaceObject(cl.namespace))
	}
	return defaultSnapshotter, nil
}

// unpackedImage is what a container needs of an image.
type unpackedImage struct {
	name    string
	config  ocispec.Image
	chainID digest.Digest // "" for an image without layers
}

// resolveUnpackedImage reads the image's manifest for this platform and its config, and
// checks that its layers are unpacked in snapshotter.
func resolveUnpackedImage(ctx context.Context, cl *client, name, snapshotter string) (*unpackedImage, error) {
	resp, err := imagesapi.NewImagesClient(cl.conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return nil, cl.fail(err, "get", cl.object("image", name))
	}
	src := imageContent{ctx: ctx, cl: cl, api: contentapi.NewContentClient(cl.conn), image: name}
	target := resp.GetImage().GetTarget()
	if target == nil {
		return nil, fmt.Errorf("image %q in namespace %q has no target (import or pull it again)", name, cl.namespace)
	}
	manifest, err := src.manifest(descriptorFromProto(target), 0)
	if err != nil {
		return nil, err
	}
	b, err := src.read(manifest.Config)
	if err != nil {
		return nil, err
	}
	img := &unpackedImage{name: name}
	if err := json.Unmarshal(b, &img.config); err != nil {
		return nil, fmt.Errorf("image %q: config %s: %w", name, manifest.Config.Digest, err)
	}
	img.chainID = chainID(img.config.RootFS.DiffIDs)
	if img.chainID == "" {
		return img, nil
	}
	st, err := snapshotsapi.NewSnapshotsClient(cl.conn).Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: snapshotter, Key: img.chainID.String()})
	notUnpacked := fmt.Errorf("image %q is not unpacked in snapshotter %q: run `berth images import` (which unpacks) or `ctr images import`", name, snapshotter)
	switch {
	case err != nil && errdefs.IsNotFound(errgrpc.ToNative(err)):
		return nil, notUnpacked
	case err != nil:
		return nil, cl.fail(err, "stat", cl.object("snapshot", img.chainID.String()))
	case st.GetInfo().GetKind() != snapshotsapi.Kind_COMMITTED:
		return nil, notUnpacked
	}
	return img, nil
}

// chainID is the identity of a stack of layers: the first diff ID, then
// sha256(parent chain ID + " " + diff ID) for each further layer.
func chainID(diffIDs []digest.Digest) digest.Digest {
	var chain digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			chain = d
			continue
		}
		chain = digest.FromString(chain.String() + " " + d.String())
	}
	return chain
}

func descriptorFromProto(d *types.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.GetMediaType(), Digest: digest.Digest(d.GetDigest()), Size: d.GetSize(), Annotations: d.GetAnnotations()}
}

// imageContent reads an image's metadata blobs through the Content service.
type imageContent struct {
	ctx   context.Context
	cl    *client
	api   contentapi.ContentClient
	image string
}

const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// manifest returns the manifest desc names, choosing this host's platform in indexes.
func (s imageContent) manifest(desc ocispec.Descriptor, depth int) (*ocispec.Manifest, error) {
	if depth > 4 {
		return nil, fmt.Errorf("image %q: indexes nested too deep", s.image)
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest, mediaTypeDockerManifest:
		b, err := s.read(desc)
		if err != nil {
			return nil, err
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("image %q: manifest %s: %w", s.image, desc.Digest, err)
		}
		return &m, nil
	case ocispec.MediaTypeImageIndex, mediaTypeDockerManifestList:
		b, err := s.read(desc)
		if err != nil {
			return nil, err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("image %q: index %s: %w", s.image, desc.Digest, err)
		}
		match := platforms.Only(platforms.DefaultSpec())
		var candidates []ocispec.Descriptor
		for _, m := range idx.Manifests {
			if m.Platform == nil || match.Match(*m.Platform) {
				candidates = append(candidates, m)
			}
		}
		if len(candidates) == 0 {
			return nil, fmt.Errorf("image %q has no manifest for this platform (%s)", s.image, platforms.DefaultString())
		}
		sort.SliceStable(candidates, func(i, j int) bool {
			pi, pj := candidates[i].Platform, candidates[j].Platform
			if pi == nil || pj == nil {
				return pj == nil && pi != nil
			}
			return match.Less(*pi, *pj)
		})
		var firstErr error
		for _, m := range candidates {
			mf, err := s.manifest(m, depth+1)
			if err == nil {
				return mf, nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		return nil, firstErr
	}
	return nil, fmt.Errorf("image %q: unsupported media type %q of %s", s.image, desc.MediaType, desc.Digest)
}

// read returns a blob, verified against its descriptor.
func (s imageContent) read(desc ocispec.Descriptor) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("image %q: invalid digest %q: %w", s.image, desc.Digest, err)
	}
	if desc.Size < 0 || desc.Size > maxImageMetadata {
		return nil, fmt.Errorf("image %q: %s has size %d, more than berth reads for metadata (%d)", s.image, desc.Digest, desc.Size, maxImageMetadata)
	}
	obj := s.cl.object("content", desc.Digest.String())
	stream, err := s.api.Read(s.ctx, &contentapi.ReadContentRequest{Digest: desc.Digest.String()})
	if err != nil {
		return nil, s.cl.fail(err, "read", obj)
	}
	var b []byte
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errdefs.IsNotFound(errgrpc.ToNative(err)) {
				return nil, fmt.Errorf("image %q is incomplete: blob %s is missing (import or pull the image again)", s.image, desc.Digest)
			}
			return nil, s.cl.fail(err, "read", obj)
		}
		b = append(b, resp.GetData()...)
		if int64(len(b)) > desc.Size {
			break
		}
	}
	if int64(len(b)) != desc.Size || digest.FromBytes(b) != desc.Digest {
		return nil, fmt.Errorf("image %q: blob %s does not match its descriptor (size %d, read %d bytes)", s.image, desc.Digest, desc.Size, len(b))
	}
	return b, nil
}

// newLeaseID is an ID in containerd's style: nanoseconds and four random characters.
func newLeaseID() string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return fmt.Sprintf("%d-%s", time.Now().UnixNano(), b)
}

// withLease creates a lease expiring in 24h (labels added) and returns the context that
// carries it, and its deletion.
func withLease(ctx context.Context, cl *client, id string, labels map[string]string, advice ...advice) (context.Context, func() error, error) {
	if id == "" {
		id = newLeaseID()
	}
	all := map[string]string{labelGCExpire: time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)}
	for k, v := range labels {
		all[k] = v
	}
	api := leasesapi.NewLeasesClient(cl.conn)
	if _, err := api.Create(ctx, &leasesapi.CreateRequest{ID: id, Labels: all}); err != nil {
		return nil, nil, cl.fail(err, "create", cl.object("lease", id), advice...)
	}
	done := func() error {
		_, err := api.Delete(context.WithoutCancel(ctx), &leasesapi.DeleteRequest{ID: id})
		return cl.fail(err, "remove", cl.object("lease", id))
	}
	return metadata.AppendToOutgoingContext(ctx, leaseHeader, id), done, nil
}

// createRunContainer prepares the container's snapshot and creates its record, under a
// lease so that nothing is collected half-made.
func createRunContainer(ctx context.Context, cl *client, o *runOptions, img *unpackedImage, snapshotter string) (_ *containersapi.Container, err error) {
	lctx, done, err := withLease(ctx, cl, "", nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := done(); derr != nil && err == nil {
			err = derr
		}
	}()
	snaps := snapshotsapi.NewSnapshotsClient(cl.conn)
	prep, err := snaps.Prepare(lctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: snapshotter, Key: o.id, Parent: img.chainID.String()})
	if err != nil {
		return nil, cl.fail(err, "prepare", cl.object("snapshot", o.id),
			when(errdefs.ErrAlreadyExists, fmt.Sprintf("already exists: is there a container %s? (remove it with: berth containers rm %s; or the snapshot with: berth snapshots rm %s)", o.id, o.id, o.id)))
	}
	created := false
	defer func() {
		if !created {
			_, _ = snaps.Remove(context.WithoutCancel(ctx), &snapshotsapi.RemoveSnapshotRequest{Snapshotter: snapshotter, Key: o.id})
		}
	}()
	spec, err := runSpec(ctx, cl.namespace, o, img, mount.FromProto(prep.GetMounts()))
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{labelStopSignal: "SIGTERM"}
	if s := img.config.Config.StopSignal; s != "" {
		labels[labelStopSignal] = s
	}
	for k, v := range o.labels {
		labels[k] = v
	}
	ctr := &containersapi.Container{
		ID:          o.id,
		Labels:      labels,
		Image:       img.name,
		Runtime:     &containersapi.Container_Runtime{Name: o.runtime, Options: runtimeOptions(o.runtime)},
		Spec:        &anypb.Any{TypeUrl: specTypeURL, Value: specJSON},
		Snapshotter: snapshotter,
		SnapshotKey: o.id,
	}
	resp, err := containersapi.NewContainersClient(cl.conn).Create(lctx, &containersapi.CreateContainerRequest{Container: ctr})
	if err != nil {
		return nil, cl.fail(err, "create", cl.object("container", o.id))
	}
	created = true
	return resp.GetContainer(), nil
}

// runtimeOptions are the empty runc options ctr sends for the runc runtimes, nil for others.
func runtimeOptions(runtime string) *anypb.Any {
	if !strings.HasPrefix(runtime, "io.containerd.runc.") {
		return nil
	}
	b, _ := proto.Marshal(&runcoptions.Options{})
	return &anypb.Any{TypeUrl: runcOptionsURL, Value: b}
}

// defaultPath is the PATH of a process whose image sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runSpec is the default spec with the image's config and the command line applied, in
// ctr's order: the image's environment overridden by --env, COMMAND replacing Entrypoint
// and Cmd, --cwd over WorkingDir, --user over User.
func runSpec(ctx context.Context, ns string, o *runOptions, img *unpackedImage, rootfs []mount.Mount) (*specs.Spec, error) {
	cfg := img.config.Config
	args := o.args
	if len(args) == 0 {
		args = append(append([]string(nil), cfg.Entrypoint...), cfg.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("image %q sets no command (Entrypoint, Cmd): give one after the container ID", img.name)
	}
	cwd := o.cwd
	if cwd == "" {
		cwd = cfg.WorkingDir
	}
	spec := oci.Default(ns, o.id, oci.Options{
		Args: args, Cwd: cwd, Terminal: o.tty, HostNet: o.netHost, Mounts: o.mounts,
		Hostname: o.hostname, ReadOnly: o.readOnly,
	})
	env := cfg.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	env = mergeEnv(env, o.env)
	if o.tty {
		env = mergeEnv(env, []string{"TERM=xterm"})
	}
	if !hasEnv(env, "PATH") {
		env = append([]string{defaultPath}, env...)
	}
	spec.Process.Env = env
	user := o.user
	if user == "" {
		user = cfg.User
	}
	if user != "" {
		u, err := resolveUser(ctx, user, rootfs)
		if err != nil {
			return nil, fmt.Errorf("user %q of container %q: %w", user, o.id, err)
		}
		spec.Process.User = u
	}
	return spec, nil
}

// mergeEnv replaces the variables of base that over sets and appends the others.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// taskStart says how to connect and follow a task's init process.
type taskStart struct {
	detach  bool
	nullIO  bool
	fifoDir string
	stdout  io.Writer
	stderr  io.Writer
}

// startTask creates the container's task on its snapshot's mounts (Snapshots.Mounts) with
// FIFOs for its streams, starts it and, unless detached, follows it until it exits and
// deletes it; it returns the exit status.
func startTask(ctx context.Context, cl *client, ctr *containersapi.Container, o taskStart) (uint32, error) {
	id := ctr.GetID()
	var spec specs.Spec
	if err := json.Unmarshal(ctr.GetSpec().GetValue(), &spec); err != nil {
		return 0, fmt.Errorf("container %q in namespace %q: its spec is not an OCI runtime spec: %v", id, cl.namespace, err)
	}
	terminal := spec.Process != nil && spec.Process.Terminal
	var rootfs []*types.Mount
	if ctr.GetSnapshotKey() != "" {
		resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: ctr.GetSnapshotter(), Key: ctr.GetSnapshotKey()})
		if err != nil {
			return 0, cl.fail(err, "get mounts of", cl.object("snapshot", ctr.GetSnapshotKey()))
		}
		rootfs = resp.GetMounts()
	}
	p, err := newLocalProcess(id, "", terminal && !o.detach, terminal, o)
	if err != nil {
		return 0, err
	}
	defer p.close(o.detach)
	api := tasksapi.NewTasksClient(cl.conn)
	_, err = api.Create(ctx, &tasksapi.CreateTaskRequest{
		ContainerID: id, Rootfs: rootfs, Terminal: terminal,
		Stdin: p.fifos.stdin, Stdout: p.fifos.stdout, Stderr: p.fifos.stderr,
	})
	if err != nil {
		return 0, cl.fail(err, "create", cl.object("task", id),
			when(errdefs.ErrAlreadyExists, "already exists: remove it first with: berth tasks rm -f "+id))
	}
	p.created(ctx, api)
	status, err := p.follow(ctx, cl, api, o.detach)
	if o.detach {
		return 0, err
	}
	if _, derr := api.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id}); derr != nil && err == nil {
		err = cl.fail(derr, "remove", cl.object("task", id))
	}
	p.drain()
	return status, err
}

// localProcess is a task's init process or an exec followed from this terminal.
type localProcess struct {
	id, execID string
	fifos      *fifoSet
	io         *clientIO
	term       *localTerminal
	closeStdin chan func()   // Tasks.CloseIO, once the process exists
	gone       chan struct{} // closed by close
	closeOnce  sync.Once
}

// created hands the process's Tasks.CloseIO to the end of the input.
func (p *localProcess) created(ctx context.Context, api tasksapi.TasksClient) {
	p.closeStdin <- func() {
		_, _ = api.CloseIO(ctx, &tasksapi.CloseIORequest{ContainerID: p.id, ExecID: p.execID, Stdin: true})
	}
}

// stdinEOF asks, once the process exists, that it see the end of its input.
func (p *localProcess) stdinEOF() {
	select {
	case closeIO := <-p.closeStdin:
		closeIO()
	case <-p.gone:
	}
}

// newLocalProcess makes the FIFOs of a process (unless --null-io), opens the client's ends,
// and puts the local terminal in raw mode when raw.
func newLocalProcess(id, execID string, raw, terminal bool, o taskStart) (_ *localProcess, err error) {
	p := &localProcess{id: id, execID: execID, fifos: &fifoSet{terminal: terminal},
		closeStdin: make(chan func(), 1), gone: make(chan struct{})}
	if o.nullIO {
		return p, nil
	}
	name := id
	if execID != "" {
		name = execID
	}
	if p.fifos, err = newFIFOSet(o.fifoDir, name, terminal); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.close(false)
		}
	}()
	if raw {
		if p.term, err = openLocalTerminal(); err != nil {
			return nil, err
		}
	}
	streams := processStreams{stdin: os.Stdin, stdout: o.stdout, stderr: o.stderr}
	if o.detach {
		// berth's input is not the detached process's: its stdin stays open (the shim holds
		// it) for a later attach
		streams.stdin = nil
	}
	if p.io, err = openClientIO(p.fifos, streams, true, p.stdinEOF); err != nil {
		return nil, err
	}
	return p, nil
}

// close restores the terminal, closes the client's ends and, unless the process was left
// running detached, removes the FIFOs.
func (p *localProcess) close(detached bool) {
	p.closeOnce.Do(func() { close(p.gone) })
	p.term.reset()
	p.io.close()
	if !detached {
		p.fifos.remove()
	}
}

// follow starts the process with Wait already under way and, unless detach, passes window
// sizes and signals on until it exits; it returns the exit status. The caller deletes the
// process, then drains.
func (p *localProcess) follow(ctx context.Context, cl *client, api tasksapi.TasksClient, detach bool) (uint32, error) {
	obj := cl.object("task", p.id)
	if p.execID != "" {
		obj = cl.object("process", p.execID)
	}
	waitc := make(chan processExit, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	var signals *signalForwarder
	if !detach {
		signals = newSignalForwarder()
		defer signals.stop()
		go func() {
			r, err := api.Wait(wctx, &tasksapi.WaitRequest{ContainerID: p.id, ExecID: p.execID})
			waitc <- processExit{r.GetExitStatus(), err}
		}()
	}
	if _, err := api.Start(ctx, &tasksapi.StartRequest{ContainerID: p.id, ExecID: p.execID}); err != nil {
		return 0, cl.fail(err, "start", obj)
	}
	if detach {
		return 0, nil
	}
	r := p.waitExit(ctx, api, waitc, signals)
	if r.err != nil {
		return 0, cl.fail(r.err, "wait for", obj)
	}
	return r.status, nil
}

// drain waits for the rest of the output and restores the terminal. Called after the process
// is deleted: shims copy what is left in the process's pipes before they close their ends of
// the FIFOs at the latest then (berth's shim holds them open until the delete, containerd's
// closes them at the end of the output and waits for its copies in the delete).
func (p *localProcess) drain() {
	if p.io != nil {
		p.io.wait(5 * time.Second)
	}
	p.term.reset()
}

// processExit is the answer to Tasks.Wait.
type processExit struct {
	status uint32
	err    error
}

// waitExit passes window sizes and the signals caught by signals on until waitc delivers
// the exit.
func (p *localProcess) waitExit(ctx context.Context, api tasksapi.TasksClient, waitc <-chan processExit, signals *signalForwarder) processExit {
	if p.term != nil {
		stop := p.term.watchResize(func(w, h uint32) {
			_, _ = api.ResizePty(ctx, &tasksapi.ResizePtyRequest{ContainerID: p.id, ExecID: p.execID, Width: w, Height: h})
		})
		defer stop()
	}
	signals.start(func(sig syscall.Signal) {
		_, _ = api.Kill(ctx, &tasksapi.KillRequest{ContainerID: p.id, ExecID: p.execID, Signal: uint32(sig)})
	})
	return <-waitc
}
