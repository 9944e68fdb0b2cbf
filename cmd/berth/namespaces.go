package main

import (
	"context"
	"fmt"

	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func namespacesCommand() *cli.Command {
	return &cli.Command{
		Name:    "namespaces",
		Aliases: []string{"namespace", "ns"},
		Usage:   "manage namespaces",
		Description: `Every object (container, image, snapshot, lease) lives in one namespace; berth works in
	--namespace (default "default"). ctr uses "default" too, Kubernetes (CRI) uses "k8s.io" and
	docker uses "moby": objects made by one tool are only visible to another in the same namespace.`,
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list namespaces: NAME LABELS",
				Flags:   []cli.Flag{quietFlag(), jsonFlag()},
				Action:  namespacesList,
			},
			{
				Name:      "create",
				Usage:     "create a namespace",
				ArgsUsage: "NAME [KEY=VALUE…]",
				Action:    namespacesCreate,
			},
			{
				Name:      "label",
				Usage:     "set labels of a namespace (KEY= removes one); without labels, print them",
				ArgsUsage: "NAME [KEY=VALUE…]",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    namespacesLabel,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove empty namespaces",
				ArgsUsage: "NAME [NAME…]",
				Action:    namespacesRemove,
			},
		},
	}
}

// namespaceView is a namespace as --json prints it.
type namespaceView struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

func namespaceObject(name string) object { return object{kind: "namespace", id: name} }

// namespacesList calls Namespaces.List; it carries the labels, so no Get per namespace.
func namespacesList(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef(c, "unexpected arguments %q", c.Args().Slice())
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := namespacesapi.NewNamespacesClient(cl.conn).List(ctx, &namespacesapi.ListNamespacesRequest{})
	if err != nil {
		return cl.fail(err, "list", object{kind: "namespaces"})
	}
	views := make([]namespaceView, 0, len(resp.GetNamespaces()))
	for _, ns := range resp.GetNamespaces() {
		views = append(views, namespaceView{Name: ns.GetName(), Labels: ns.GetLabels()})
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, v := range views {
			fmt.Fprintln(w, v.Name)
		}
		return nil
	}
	t := newTable(w, "NAME", "LABELS")
	for _, v := range views {
		t.row(v.Name, formatLabels(v.Labels))
	}
	return t.flush()
}

// namespacesCreate calls Namespaces.Create{name, labels}.
func namespacesCreate(c *cli.Context) error {
	if err := requireArgs(c, 1, "a namespace NAME"); err != nil {
		return err
	}
	name := c.Args().First()
	labels, err := parseLabels(c.Args().Tail())
	if err != nil {
		return usagef(c, "%v", err)
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = namespacesapi.NewNamespacesClient(cl.conn).Create(ctx, &namespacesapi.CreateNamespaceRequest{
		Namespace: &namespacesapi.Namespace{Name: name, Labels: labels},
	})
	return cl.fail(err, "create", namespaceObject(name))
}

// namespacesLabel calls Namespaces.Update with one update_mask path "labels.KEY" per label,
// as ctr does; without labels it prints the namespace's labels (Namespaces.Get).
func namespacesLabel(c *cli.Context) error {
	return labeler{
		what:   "a namespace NAME",
		object: func(_ *client, name string) object { return namespaceObject(name) },
		get: func(ctx context.Context, cl *client, name string) (map[string]string, error) {
			resp, err := namespacesapi.NewNamespacesClient(cl.conn).Get(ctx, &namespacesapi.GetNamespaceRequest{Name: name})
			return resp.GetNamespace().GetLabels(), err
		},
		update: func(ctx context.Context, cl *client, name string, labels map[string]string, mask *fieldmaskpb.FieldMask) error {
			_, err := namespacesapi.NewNamespacesClient(cl.conn).Update(ctx, &namespacesapi.UpdateNamespaceRequest{
				Namespace: &namespacesapi.Namespace{Name: name, Labels: labels}, UpdateMask: mask})
			return err
		},
	}.run(c)
}

// namespacesRemove calls Namespaces.Delete for each name.
func namespacesRemove(c *cli.Context) error {
	return forEachArg(c, "at least one namespace NAME", func(cl *client, ctx context.Context, name string) error {
		api := namespacesapi.NewNamespacesClient(cl.conn)
		_, err := api.Delete(ctx, &namespacesapi.DeleteNamespaceRequest{Name: name})
		return cl.fail(err, "remove", namespaceObject(name),
			when(errdefs.ErrFailedPrecondition, "is not empty: remove its containers and images first"))
	})
}

// printLabels prints labels one KEY=VALUE a line, sorted, or as a JSON object.
func printLabels(c *cli.Context, labels map[string]string) error {
	if wantJSON(c) {
		if labels == nil {
			labels = map[string]string{}
		}
		return printJSON(c.App.Writer, labels)
	}
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(c.App.Writer, "%s=%s\n", k, labels[k])
	}
	return nil
}
