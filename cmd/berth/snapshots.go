package main

// berth snapshots: the Snapshots service of one snapshotter, as ctr's snapshots commands use it
// (containerd-api-surface.md §2.1); and berth images mount/unmount, which mount an image's
// snapshot on a directory from the client side, as ctr does.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/mount"
	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func init() {
	// berth containers rm removes the container's snapshot before its record, as ctr does.
	containerRemoveSteps = append(containerRemoveSteps, func(ctx context.Context, cl *client, c *containersapi.Container) error {
		if c.GetSnapshotKey() == "" || c.GetSnapshotter() == "" {
			return nil
		}
		return removeSnapshot(ctx, cl, c.GetSnapshotter(), c.GetSnapshotKey())
	})
	imageSubcommands = append(imageSubcommands, imageMountCommands)
}

// snapshotterFlag is the snapshots group's --snapshotter.
func snapshotterFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "snapshotter",
		Usage:   "snapshotter `NAME`",
		Value:   defaultSnapshotter,
		EnvVars: []string{"BERTH_SNAPSHOTTER", "CONTAINERD_SNAPSHOTTER"},
	}
}

func snapshotsCommand() *cli.Command {
	return &cli.Command{
		Name:    "snapshots",
		Aliases: []string{"snapshot", "sn"},
		Usage:   "manage snapshots: the layered root filesystems of images and containers",
		Description: `A committed snapshot per image layer stack (named by its chain ID), an active one per
	container (named by the container's ID), views for read-only mounts.`,
		Flags: []cli.Flag{snapshotterFlag()},
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list snapshots: KEY PARENT KIND",
				ArgsUsage: "[FILTER…]",
				Flags:     []cli.Flag{quietFlag(), jsonFlag()},
				Action:    snapshotsList,
			},
			{
				Name:      "info",
				Usage:     "print a snapshot as JSON",
				ArgsUsage: "KEY",
				Action:    snapshotsInfo,
			},
			{
				Name:   "tree",
				Usage:  "print the snapshots as a tree of parents and children",
				Action: snapshotsTree,
			},
			{
				Name:      "usage",
				Aliases:   []string{"du"},
				Usage:     "print the disk usage of snapshots: KEY SIZE INODES",
				ArgsUsage: "[KEY…]",
				Flags: []cli.Flag{
					jsonFlag(),
					&cli.BoolFlag{Name: "bytes", Usage: "print sizes in bytes"},
				},
				Action: snapshotsUsage,
			},
			{
				Name:      "mounts",
				Aliases:   []string{"m", "mount"},
				Usage:     "print the mount commands that mount a snapshot on TARGET",
				ArgsUsage: "TARGET KEY",
				Action:    snapshotsMounts,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove snapshots",
				ArgsUsage: "KEY [KEY…]",
				Action:    snapshotsRemove,
			},
			{
				Name:      "prepare",
				Usage:     "make an active (writable) snapshot, on PARENT if given",
				ArgsUsage: "KEY [PARENT]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "target", Usage: "print the mount commands for `DIR`"},
				},
				Action: snapshotsPrepare,
			},
			{
				Name:      "view",
				Usage:     "make a read-only view of PARENT",
				ArgsUsage: "KEY PARENT",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "target", Usage: "print the mount commands for `DIR`"},
				},
				Action: snapshotsView,
			},
			{
				Name:      "commit",
				Usage:     "commit the active snapshot KEY as NAME",
				ArgsUsage: "NAME KEY",
				Action:    snapshotsCommit,
			},
			{
				Name:      "label",
				Usage:     "set labels of a snapshot (KEY= removes one); without labels, print them",
				ArgsUsage: "KEY [LABEL=VALUE…]",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    snapshotsLabel,
			},
		},
	}
}

// snapshotterOf is the --snapshotter of the snapshots group.
func snapshotterOf(c *cli.Context) string {
	if s := c.String("snapshotter"); s != "" {
		return s
	}
	return defaultSnapshotter
}

// snapshotObject names a snapshot for errors.
func snapshotObject(cl *client, _, key string) object {
	return cl.object("snapshot", key)
}

// kindName is a snapshot kind as ctr prints it.
func kindName(k snapshotsapi.Kind) string {
	switch k {
	case snapshotsapi.Kind_ACTIVE:
		return "Active"
	case snapshotsapi.Kind_VIEW:
		return "View"
	case snapshotsapi.Kind_COMMITTED:
		return "Committed"
	}
	return "Unknown"
}

// snapshotView is a snapshot as --json and info print it.
type snapshotView struct {
	Name      string            `json:"name"`
	Parent    string            `json:"parent,omitempty"`
	Kind      string            `json:"kind"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
	UpdatedAt *time.Time        `json:"updated_at,omitempty"`
}

func newSnapshotView(i *snapshotsapi.Info) snapshotView {
	return snapshotView{
		Name: i.GetName(), Parent: i.GetParent(), Kind: kindName(i.GetKind()), Labels: i.GetLabels(),
		CreatedAt: jsonTime(i.GetCreatedAt()), UpdatedAt: jsonTime(i.GetUpdatedAt()),
	}
}

// listSnapshots calls Snapshots.List and collects the stream, sorted by name.
func listSnapshots(ctx context.Context, cl *client, snapshotter string, filters []string) ([]*snapshotsapi.Info, error) {
	stream, err := snapshotsapi.NewSnapshotsClient(cl.conn).List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: snapshotter, Filters: filters})
	if err != nil {
		return nil, cl.fail(err, "list", cl.object("snapshots", ""))
	}
	var list []*snapshotsapi.Info
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, cl.fail(err, "list", cl.object("snapshots", ""))
		}
		list = append(list, resp.GetInfo()...)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].GetName() < list[j].GetName() })
	return list, nil
}

func snapshotsList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	list, err := listSnapshots(ctx, cl, snapshotterOf(c), c.Args().Slice())
	if err != nil {
		return err
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		views := make([]snapshotView, 0, len(list))
		for _, i := range list {
			views = append(views, newSnapshotView(i))
		}
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, i := range list {
			fmt.Fprintln(w, i.GetName())
		}
		return nil
	}
	t := newTable(w, "KEY", "PARENT", "KIND")
	for _, i := range list {
		t.row(i.GetName(), i.GetParent(), kindName(i.GetKind()))
	}
	return t.flush()
}

func snapshotsInfo(c *cli.Context) error {
	if err := requireArgs(c, 1, "a snapshot KEY"); err != nil {
		return err
	}
	if c.NArg() > 1 {
		return usagef(c, "expected one snapshot KEY, got %d", c.NArg())
	}
	key := c.Args().First()
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: sn, Key: key})
	if err != nil {
		return cl.fail(err, "get", snapshotObject(cl, sn, key))
	}
	return printJSON(c.App.Writer, newSnapshotView(resp.GetInfo()))
}

// snapshotsTree prints every snapshot under its parent:
//
//	sha256:aaa…
//	  \_ sha256:bbb…
//	    \_ c1
func snapshotsTree(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	list, err := listSnapshots(ctx, cl, snapshotterOf(c), nil)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	children := map[string][]string{}
	for _, i := range list {
		known[i.GetName()] = true
	}
	var roots []string
	for _, i := range list {
		if p := i.GetParent(); p != "" && known[p] {
			children[p] = append(children[p], i.GetName())
		} else {
			roots = append(roots, i.GetName())
		}
	}
	w := c.App.Writer
	var print func(name string, level int)
	print = func(name string, level int) {
		prefix := ""
		if level > 0 {
			prefix = strings.Repeat("  ", level-1) + "\\_ "
		}
		fmt.Fprintln(w, prefix+name)
		if level > 64 { // a loop in the parents would be a snapshotter bug; do not recurse forever
			return
		}
		for _, child := range children[name] {
			print(child, level+1)
		}
	}
	for _, r := range roots {
		print(r, 0)
	}
	return nil
}

// usageView is one snapshot's disk usage.
type usageView struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	Inodes int64  `json:"inodes"`
}

// snapshotsUsage calls Snapshots.Usage for the keys given, or for every snapshot.
func snapshotsUsage(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	keys := c.Args().Slice()
	if len(keys) == 0 {
		list, err := listSnapshots(ctx, cl, sn, nil)
		if err != nil {
			return err
		}
		for _, i := range list {
			keys = append(keys, i.GetName())
		}
	}
	api := snapshotsapi.NewSnapshotsClient(cl.conn)
	var views []usageView
	var failed []error
	for _, key := range keys {
		resp, err := api.Usage(ctx, &snapshotsapi.UsageRequest{Snapshotter: sn, Key: key})
		if err != nil {
			if errdefs.IsNotFound(errgrpc.ToNative(err)) && c.NArg() == 0 {
				continue // removed since the listing
			}
			failed = append(failed, cl.fail(err, "get usage of", snapshotObject(cl, sn, key)))
			continue
		}
		views = append(views, usageView{Key: key, Size: resp.GetSize(), Inodes: resp.GetInodes()})
	}
	w := c.App.Writer
	if wantJSON(c) {
		if views == nil {
			views = []usageView{}
		}
		if err := printJSON(w, views); err != nil {
			return err
		}
	} else {
		t := newTable(w, "KEY", "SIZE", "INODES")
		for _, v := range views {
			size := byteSize(v.Size)
			if c.Bool("bytes") {
				size = fmt.Sprint(v.Size)
			}
			t.row(v.Key, size, fmt.Sprint(v.Inodes))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	for _, err := range failed[:max(len(failed)-1, 0)] {
		fmt.Fprintln(c.App.ErrWriter, "berth: "+render(err))
	}
	if len(failed) > 0 {
		return failed[len(failed)-1]
	}
	return nil
}

// snapshotsMounts prints the mount commands that mount KEY on TARGET, as ctr does.
func snapshotsMounts(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected a TARGET directory and a snapshot KEY")
	}
	target, key := c.Args().Get(0), c.Args().Get(1)
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: sn, Key: key})
	if err != nil {
		return cl.fail(err, "get mounts of", snapshotObject(cl, sn, key))
	}
	printMountCommands(c.App.Writer, target, resp.GetMounts())
	return nil
}

// printMountCommands writes one `mount -t TYPE SOURCE TARGET -o OPTIONS` line per mount.
func printMountCommands(w io.Writer, target string, mounts []*types.Mount) {
	for _, m := range mounts {
		line := fmt.Sprintf("mount -t %s %s %s", m.GetType(), m.GetSource(), filepath.Join(target, m.GetTarget()))
		if len(m.GetOptions()) > 0 {
			line += " -o " + strings.Join(m.GetOptions(), ",")
		}
		fmt.Fprintln(w, line)
	}
}

// removeSnapshot removes key; a snapshot already gone is not an error. A snapshot with
// children is refused with their names.
func removeSnapshot(ctx context.Context, cl *client, snapshotter, key string) error {
	_, err := snapshotsapi.NewSnapshotsClient(cl.conn).Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: snapshotter, Key: key})
	if err == nil || errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return nil
	}
	return snapshotRemoveError(ctx, cl, snapshotter, key, err)
}

// snapshotRemoveError explains a refused Snapshots.Remove: FailedPrecondition means children.
func snapshotRemoveError(ctx context.Context, cl *client, snapshotter, key string, err error) error {
	obj := snapshotObject(cl, snapshotter, key)
	if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		return cl.fail(err, "remove", obj)
	}
	var kids []string
	if list, lerr := listSnapshots(ctx, cl, snapshotter, nil); lerr == nil {
		for _, i := range list {
			if i.GetParent() == key {
				kids = append(kids, i.GetName())
			}
		}
	}
	text := "has children: remove them first"
	if len(kids) > 0 {
		text = fmt.Sprintf("is the parent of %s: remove %s first (berth snapshots rm %s; a container's snapshot goes with berth containers rm)",
			strings.Join(kids, ", "), map[bool]string{true: "it", false: "them"}[len(kids) == 1], strings.Join(kids, " "))
	}
	return cl.fail(err, "remove", obj, when(errdefs.ErrFailedPrecondition, text))
}

func snapshotsRemove(c *cli.Context) error {
	sn := snapshotterOf(c)
	return forEachArg(c, "at least one snapshot KEY", func(cl *client, ctx context.Context, key string) error {
		api := snapshotsapi.NewSnapshotsClient(cl.conn)
		_, err := api.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: sn, Key: key})
		if err != nil {
			return snapshotRemoveError(ctx, cl, sn, key, err)
		}
		return nil
	})
}

// gcRootLabels keep what berth snapshots makes from the garbage collector, as ctr's do.
func gcRootLabels() map[string]string {
	return map[string]string{labelGCRoot: time.Now().UTC().Format(time.RFC3339)}
}

func snapshotsPrepare(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef(c, "expected a snapshot KEY and optionally its PARENT")
	}
	key, parent := c.Args().Get(0), c.Args().Get(1)
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{
		Snapshotter: sn, Key: key, Parent: parent, Labels: gcRootLabels(),
	})
	if err != nil {
		if parent != "" && errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return cl.fail(err, "prepare", snapshotObject(cl, sn, key), when(errdefs.ErrNotFound,
				fmt.Sprintf("cannot be prepared: parent %q not found (list snapshots with: berth -n %s snapshots ls)", parent, cl.namespace)))
		}
		return cl.fail(err, "prepare", snapshotObject(cl, sn, key))
	}
	if t := c.String("target"); t != "" {
		printMountCommands(c.App.Writer, t, resp.GetMounts())
	}
	return nil
}

func snapshotsView(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected a snapshot KEY and its PARENT")
	}
	key, parent := c.Args().Get(0), c.Args().Get(1)
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).View(ctx, &snapshotsapi.ViewSnapshotRequest{
		Snapshotter: sn, Key: key, Parent: parent, Labels: gcRootLabels(),
	})
	if err != nil {
		return cl.fail(err, "make view", snapshotObject(cl, sn, key))
	}
	if t := c.String("target"); t != "" {
		printMountCommands(c.App.Writer, t, resp.GetMounts())
	}
	return nil
}

func snapshotsCommit(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected the committed snapshot's NAME and the active snapshot's KEY")
	}
	name, key := c.Args().Get(0), c.Args().Get(1)
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn := snapshotterOf(c)
	_, err = snapshotsapi.NewSnapshotsClient(cl.conn).Commit(ctx, &snapshotsapi.CommitSnapshotRequest{
		Snapshotter: sn, Name: name, Key: key, Labels: gcRootLabels(),
	})
	if errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		return cl.fail(err, "commit", snapshotObject(cl, sn, name))
	}
	return cl.fail(err, "commit", snapshotObject(cl, sn, key),
		when(errdefs.ErrFailedPrecondition, "cannot be committed: only active snapshots (made with prepare) can"))
}

// snapshotsLabel calls Snapshots.Update with labels.KEY paths; without labels it prints them.
func snapshotsLabel(c *cli.Context) error {
	sn := snapshotterOf(c)
	return labeler{
		what:   "a snapshot KEY",
		object: func(cl *client, key string) object { return snapshotObject(cl, sn, key) },
		get: func(ctx context.Context, cl *client, key string) (map[string]string, error) {
			resp, err := snapshotsapi.NewSnapshotsClient(cl.conn).Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: sn, Key: key})
			return resp.GetInfo().GetLabels(), err
		},
		update: func(ctx context.Context, cl *client, key string, labels map[string]string, mask *fieldmaskpb.FieldMask) error {
			_, err := snapshotsapi.NewSnapshotsClient(cl.conn).Update(ctx, &snapshotsapi.UpdateSnapshotRequest{
				Snapshotter: sn, Info: &snapshotsapi.Info{Name: key, Labels: labels}, UpdateMask: mask})
			return err
		},
	}.run(c)
}

// imageMountCommands are berth images mount and unmount, for the images group.
func imageMountCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "mount",
			Usage:     "mount an image's root filesystem on TARGET (read-only unless --rw)",
			ArgsUsage: "IMAGE TARGET",
			Description: `Makes a view (with --rw: an active snapshot) named TARGET on the image's layers,
	held by a lease named TARGET that expires in 24 hours, and mounts it on TARGET. Undo with:
	berth images unmount --rm TARGET.`,
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "rw", Usage: "mount a writable snapshot instead of a read-only view"},
				&cli.StringFlag{Name: "snapshotter", Usage: "snapshotter `NAME` (default: the namespace's default, else overlayfs)", EnvVars: []string{"BERTH_SNAPSHOTTER", "CONTAINERD_SNAPSHOTTER"}},
			},
			Action: imagesMount,
		},
		{
			Name:      "unmount",
			Aliases:   []string{"umount"},
			Usage:     "unmount an image mounted with berth images mount",
			ArgsUsage: "TARGET",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "rm", Usage: "also remove the snapshot and its lease"},
				&cli.StringFlag{Name: "snapshotter", Usage: "snapshotter `NAME` (default: the namespace's default, else overlayfs)", EnvVars: []string{"BERTH_SNAPSHOTTER", "CONTAINERD_SNAPSHOTTER"}},
			},
			Action: imagesUnmount,
		},
	}
}

// imagesMount is ctr's images mount: Leases.Create(id TARGET, gc.expire, gc.ref.snapshot) →
// Snapshots.View(key TARGET, parent chain ID) or Prepare with --rw → mount on TARGET here.
func imagesMount(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected an IMAGE and a TARGET directory")
	}
	name := c.Args().Get(0)
	target, err := filepath.Abs(c.Args().Get(1))
	if err != nil {
		return err
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		return usagef(c, "TARGET %s must be an existing directory", target)
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	sn, err := snapshotterFor(ctx, c, cl)
	if err != nil {
		return err
	}
	img, err := resolveUnpackedImage(ctx, cl, name, sn)
	if err != nil {
		return err
	}
	lctx, _, err := withLease(ctx, cl, target, map[string]string{"containerd.io/gc.ref.snapshot." + sn: target},
		when(errdefs.ErrAlreadyExists, fmt.Sprintf("already exists: is %s mounted already? (undo with: berth images unmount --rm %s)", target, target)))
	if err != nil {
		return err
	}
	api := snapshotsapi.NewSnapshotsClient(cl.conn)
	var mounts []*types.Mount
	if c.Bool("rw") {
		resp, perr := api.Prepare(lctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: sn, Key: target, Parent: img.chainID.String()})
		mounts, err = resp.GetMounts(), perr
	} else {
		resp, verr := api.View(lctx, &snapshotsapi.ViewSnapshotRequest{Snapshotter: sn, Key: target, Parent: img.chainID.String()})
		mounts, err = resp.GetMounts(), verr
	}
	if errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		resp, merr := api.Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: sn, Key: target})
		mounts, err = resp.GetMounts(), merr
	}
	if err != nil {
		return cl.fail(err, "make", snapshotObject(cl, sn, target))
	}
	if err := mount.All(mount.FromProto(mounts), target); err != nil {
		_, _ = api.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: sn, Key: target})
		_, _ = leasesapi.NewLeasesClient(cl.conn).Delete(ctx, &leasesapi.DeleteRequest{ID: target})
		return fmt.Errorf("mount image %q on %s: %w", name, target, err)
	}
	fmt.Fprintln(c.App.Writer, target)
	return nil
}

// imagesUnmount unmounts TARGET here; with --rm it deletes the lease and the snapshot too.
func imagesUnmount(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected the TARGET directory")
	}
	target, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	if err := mount.UnmountAll(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	if c.Bool("rm") {
		cl, ctx, err := connect(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		sn, err := snapshotterFor(ctx, c, cl)
		if err != nil {
			return err
		}
		_, err = leasesapi.NewLeasesClient(cl.conn).Delete(ctx, &leasesapi.DeleteRequest{ID: target})
		if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return cl.fail(err, "remove", cl.object("lease", target))
		}
		if err := removeSnapshot(ctx, cl, sn, target); err != nil {
			return err
		}
	}
	fmt.Fprintln(c.App.Writer, target)
	return nil
}
