package main

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/leases"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/metadata"
)

// gcExpireLabel is the lease label that garbage collection reads as its expiry (RFC 3339).
const gcExpireLabel = "containerd.io/gc.expire"

func leasesCommand() *cli.Command {
	return &cli.Command{
		Name:    "leases",
		Aliases: []string{"lease"},
		Usage:   "manage leases, which keep what is made under them from garbage collection",
		Description: `A client sends a lease's ID with its requests (the containerd-lease header) so that
	the content, ingests and snapshots it makes are not collected before it is done: berth and ctr
	hold one during an import. A lease ends when it is removed or, with a
	containerd.io/gc.expire label, when it expires.`,
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list leases: ID CREATED AT LABELS",
				ArgsUsage: "[FILTER…]",
				Description: `Filters use containerd's filter language over id and labels, e.g.
	labels."containerd.io/gc.expire".`,
				Flags:  []cli.Flag{quietFlag(), jsonFlag()},
				Action: leasesList,
			},
			{
				Name:      "create",
				Usage:     "create a lease and print its ID",
				ArgsUsage: "[KEY=VALUE…]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "id", Usage: "the lease's `ID` (default: generated)"},
					&cli.DurationFlag{Name: "expires", Aliases: []string{"x"}, Value: 24 * time.Hour, Usage: "expire after `DURATION` (0: never)"},
				},
				Action: leasesCreate,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove leases",
				ArgsUsage: "ID [ID…]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "sync", Usage: "wait until garbage collection has freed what the leases held"},
				},
				Action: leasesRemove,
			},
		},
	}
}

// leaseView is a lease as --json prints it.
type leaseView struct {
	ID        string            `json:"id"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// leasesList calls Leases.List.
func leasesList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := leasesapi.NewLeasesClient(cl.conn).List(ctx, &leasesapi.ListRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "list", cl.object("leases", ""))
	}
	views := []leaseView{}
	for _, l := range resp.GetLeases() {
		views = append(views, leaseView{ID: l.GetID(), CreatedAt: jsonTime(l.GetCreatedAt()), Labels: l.GetLabels()})
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, v := range views {
			fmt.Fprintln(w, v.ID)
		}
		return nil
	}
	t := newTable(w, "ID", "CREATED AT", "LABELS")
	for _, v := range views {
		created := ""
		if v.CreatedAt != nil {
			created = v.CreatedAt.Format(time.RFC3339)
		}
		t.row(v.ID, created, formatLabels(v.Labels))
	}
	return t.flush()
}

// leasesCreate calls Leases.Create{id, labels + containerd.io/gc.expire} and prints the ID.
func leasesCreate(c *cli.Context) error {
	labels, err := parseLabels(c.Args().Slice())
	if err != nil {
		return usagef(c, "%v", err)
	}
	if d := c.Duration("expires"); d > 0 {
		labels[gcExpireLabel] = time.Now().Add(d).UTC().Format(time.RFC3339)
	} else if d < 0 {
		return usagef(c, "--expires must not be negative")
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	id := c.String("id")
	resp, err := leasesapi.NewLeasesClient(cl.conn).Create(ctx, &leasesapi.CreateRequest{ID: id, Labels: labels})
	if err != nil {
		return cl.fail(err, "create", cl.object("lease", id))
	}
	fmt.Fprintln(c.App.Writer, resp.GetLease().GetID())
	return nil
}

// leasesRemove calls Leases.Delete{id, sync} for each ID.
func leasesRemove(c *cli.Context) error {
	return forEachArg(c, "at least one lease ID", func(cl *client, ctx context.Context, id string) error {
		api := leasesapi.NewLeasesClient(cl.conn)
		_, err := api.Delete(ctx, &leasesapi.DeleteRequest{ID: id, Sync: c.Bool("sync")})
		return cl.fail(err, "remove", cl.object("lease", id))
	})
}

// holdLease creates a lease that expires after expire (in case berth dies before it ends
// it) and returns a context that carries it, and the function that removes it. The
// removal runs even when ctx was cancelled.
func holdLease(ctx context.Context, cl *client, expire time.Duration) (context.Context, func(), error) {
	api := leasesapi.NewLeasesClient(cl.conn)
	resp, err := api.Create(ctx, &leasesapi.CreateRequest{Labels: map[string]string{
		gcExpireLabel: time.Now().Add(expire).UTC().Format(time.RFC3339),
	}})
	if err != nil {
		return nil, nil, cl.fail(err, "create", cl.object("lease", ""))
	}
	id := resp.GetLease().GetID()
	release := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = api.Delete(dctx, &leasesapi.DeleteRequest{ID: id})
	}
	return metadata.AppendToOutgoingContext(ctx, leases.GRPCHeader, id), release, nil
}
