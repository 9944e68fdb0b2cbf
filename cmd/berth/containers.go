package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func containersCommand() *cli.Command {
	return &cli.Command{
		Name:    "containers",
		Aliases: []string{"container", "c"},
		Usage:   "manage container records (metadata: image, runtime, spec, labels)",
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list containers: CONTAINER IMAGE RUNTIME",
				ArgsUsage: "[FILTER…]",
				Description: `Filters use containerd's filter language, e.g. image==docker.io/library/busybox:latest,
	labels.app==web or id~=^web-.`,
				Flags:  []cli.Flag{quietFlag(), jsonFlag()},
				Action: containersList,
			},
			{
				Name:      "info",
				Usage:     "print a container as JSON, its OCI spec decoded",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "spec", Usage: "print only the OCI runtime spec"},
				},
				Action: containersInfo,
			},
			{
				Name:      "label",
				Usage:     "set labels of a container (KEY= removes one); without labels, print them",
				ArgsUsage: "ID [KEY=VALUE…]",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    containersLabel,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove containers",
				ArgsUsage: "ID [ID…]",
				Action:    containersRemove,
			},
		},
	}
}

// containerRemoveSteps run, in order, between reading a container and deleting its record:
// the command groups of tasks and snapshots add theirs (refuse while a task runs, remove the
// container's snapshot), as ctr does around Containers.Delete.
var containerRemoveSteps []func(ctx context.Context, cl *client, c *containersapi.Container) error

// containerView is a container as --json and info print it.
type containerView struct {
	ID          string                     `json:"id"`
	Image       string                     `json:"image,omitempty"`
	Runtime     *runtimeView               `json:"runtime,omitempty"`
	Labels      map[string]string          `json:"labels,omitempty"`
	Snapshotter string                     `json:"snapshotter,omitempty"`
	SnapshotKey string                     `json:"snapshot_key,omitempty"`
	Sandbox     string                     `json:"sandbox,omitempty"`
	CreatedAt   *time.Time                 `json:"created_at,omitempty"`
	UpdatedAt   *time.Time                 `json:"updated_at,omitempty"`
	Spec        json.RawMessage            `json:"spec,omitempty"`
	Extensions  map[string]json.RawMessage `json:"extensions,omitempty"`
}

type runtimeView struct {
	Name    string          `json:"name"`
	Options json.RawMessage `json:"options,omitempty"`
}

// newContainerView converts c; withSpec decodes the spec and extensions too.
func newContainerView(c *containersapi.Container, withSpec bool) containerView {
	v := containerView{
		ID:          c.GetID(),
		Image:       c.GetImage(),
		Labels:      c.GetLabels(),
		Snapshotter: c.GetSnapshotter(),
		SnapshotKey: c.GetSnapshotKey(),
		Sandbox:     c.GetSandbox(),
		CreatedAt:   jsonTime(c.GetCreatedAt()),
		UpdatedAt:   jsonTime(c.GetUpdatedAt()),
	}
	if r := c.GetRuntime(); r != nil {
		v.Runtime = &runtimeView{Name: r.GetName(), Options: anyJSON(r.GetOptions())}
	}
	if withSpec {
		v.Spec = anyJSON(c.GetSpec())
		for k, a := range c.GetExtensions() {
			if v.Extensions == nil {
				v.Extensions = map[string]json.RawMessage{}
			}
			v.Extensions[k] = anyJSON(a)
		}
	}
	return v
}

// containersList calls Containers.ListStream, or List if berthd does not implement it.
func containersList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	list, err := listContainers(ctx, containersapi.NewContainersClient(cl.conn), c.Args().Slice())
	if err != nil {
		return cl.fail(err, "list", cl.object("containers", ""))
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		views := make([]containerView, 0, len(list))
		for _, ctr := range list {
			views = append(views, newContainerView(ctr, false))
		}
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, ctr := range list {
			fmt.Fprintln(w, ctr.GetID())
		}
		return nil
	}
	t := newTable(w, "CONTAINER", "IMAGE", "RUNTIME")
	for _, ctr := range list {
		t.row(ctr.GetID(), ctr.GetImage(), ctr.GetRuntime().GetName())
	}
	return t.flush()
}

// listContainers streams the containers matching filters, falling back to the unary List on
// Unimplemented, as containerd's client does. Errors are gRPC's.
func listContainers(ctx context.Context, api containersapi.ContainersClient, filters []string) ([]*containersapi.Container, error) {
	stream, err := api.ListStream(ctx, &containersapi.ListContainersRequest{Filters: filters})
	if err == nil {
		var list []*containersapi.Container
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return list, nil
			}
			if err != nil {
				if status.Code(err) == codes.Unimplemented && len(list) == 0 {
					break
				}
				return nil, err
			}
			list = append(list, msg.GetContainer())
		}
	} else if status.Code(err) != codes.Unimplemented {
		return nil, err
	}
	resp, err := api.List(ctx, &containersapi.ListContainersRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	return resp.GetContainers(), nil
}

// containersInfo calls Containers.Get and prints the container with its spec decoded.
func containersInfo(c *cli.Context) error {
	if err := requireArgs(c, 1, "a container ID"); err != nil {
		return err
	}
	if c.NArg() > 1 {
		return usagef(c, "expected one container ID, got %d", c.NArg())
	}
	id := c.Args().First()
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := containersapi.NewContainersClient(cl.conn).Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return cl.fail(err, "get", cl.object("container", id))
	}
	v := newContainerView(resp.GetContainer(), true)
	if c.Bool("spec") {
		if v.Spec == nil {
			return fmt.Errorf("container %q in namespace %q has no spec", id, cl.namespace)
		}
		return printJSON(c.App.Writer, v.Spec)
	}
	return printJSON(c.App.Writer, v)
}

// containersLabel calls Containers.Update{id, labels} with update_mask "labels.KEY" per
// label, as ctr does; without labels it prints the container's labels.
func containersLabel(c *cli.Context) error {
	return labeler{
		what:   "a container ID",
		object: func(cl *client, id string) object { return cl.object("container", id) },
		get: func(ctx context.Context, cl *client, id string) (map[string]string, error) {
			resp, err := containersapi.NewContainersClient(cl.conn).Get(ctx, &containersapi.GetContainerRequest{ID: id})
			return resp.GetContainer().GetLabels(), err
		},
		update: func(ctx context.Context, cl *client, id string, labels map[string]string, mask *fieldmaskpb.FieldMask) error {
			_, err := containersapi.NewContainersClient(cl.conn).Update(ctx, &containersapi.UpdateContainerRequest{
				Container: &containersapi.Container{ID: id, Labels: labels}, UpdateMask: mask})
			return err
		},
	}.run(c)
}

// containersRemove reads each container (Containers.Get), runs containerRemoveSteps and
// deletes the record (Containers.Delete).
func containersRemove(c *cli.Context) error {
	return forEachArg(c, "at least one container ID", func(cl *client, ctx context.Context, id string) error {
		api := containersapi.NewContainersClient(cl.conn)
		obj := cl.object("container", id)
		resp, err := api.Get(ctx, &containersapi.GetContainerRequest{ID: id})
		if err != nil {
			return cl.fail(err, "remove", obj)
		}
		for _, step := range containerRemoveSteps {
			if err := step(ctx, cl, resp.GetContainer()); err != nil {
				return err
			}
		}
		_, err = api.Delete(ctx, &containersapi.DeleteContainerRequest{ID: id})
		return cl.fail(err, "remove", obj)
	})
}
