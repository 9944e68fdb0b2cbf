package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// namespace is where every workload's containers live.
const namespace = "bench"

// workload is one group of rows in the table: one operation measured on
// both daemons at each client count. To add a row, add an entry to
// workloads.
type workload struct {
	name string
	// fixedTime cells run for --duration; the others run --ops operations.
	fixedTime bool
	// setup, if set, runs once on each daemon before the workload's cells
	// (unmeasured); the teardown it returns runs after them. Fixtures it makes
	// are named fixtureID(i), so cells know them without shared state.
	setup func(ctx context.Context, d *daemon) (teardown func(context.Context) error, err error)
	// cell prepares one measured run on d (unmeasured) and returns it.
	cell func(ctx context.Context, d *daemon, p cellParams) (*cell, error)
	// goal, if set, is the design brief's target for the ops/s ratio
	// (berthd ÷ containerd) at every client count.
	goal float64
}

// cellParams describes one measured run.
type cellParams struct {
	tag     string // unique to this run: a prefix for the IDs it creates
	ops     int    // operation indices are 0 ≤ i < ops
	clients int
}

// cell is one measured run.
type cell struct {
	// op runs operation i (each i once) as client worker; an error is a
	// failed operation, counted and reported.
	op func(ctx context.Context, worker, i int) error
	// after, if set, runs once every client is done (unmeasured): it checks
	// that what the ops acknowledged holds, and removes what the run left
	// behind. It returns how many checks failed and the first failure.
	after func(ctx context.Context) (failures int, first error)
}

const (
	getFixtures  = 100
	listFixtures = 1000
)

var workloads = []workload{
	{name: "containers.Create", cell: createCell},
	{name: "containers.Get", fixedTime: true, setup: fixtures(getFixtures), cell: getCell},
	{name: "containers.List", fixedTime: true, setup: fixtures(listFixtures), cell: listCell},
	{name: "containers.ListStream", fixedTime: true, setup: fixtures(listFixtures), cell: listStreamCell},
	{name: "containers.Delete", cell: deleteCell},
	{name: "snapshots.Prepare+Mounts", fixedTime: true, setup: importBusybox, cell: prepareCell, goal: 1},
}

// nsContext carries the bench namespace, as containerd's clients send it.
func nsContext(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", namespace)
}

func containersClient(d *daemon, worker int) containers.ContainersClient {
	return containers.NewContainersClient(d.conn(worker))
}

func fixtureID(i int) string { return fmt.Sprintf("fixture-%d", i) }

func cellID(tag string, i int) string { return fmt.Sprintf("%s-%d", tag, i) }

// createCell creates ops containers with unique IDs. Afterwards every
// acknowledged one must read back as sent; then all are deleted.
func createCell(_ context.Context, d *daemon, p cellParams) (*cell, error) {
	const (
		attempted = 1
		acked     = 2
	)
	state := make([]uint8, p.ops) // index i is written only by the client running op i
	return &cell{
		op: func(ctx context.Context, w, i int) error {
			state[i] = attempted
			id := cellID(p.tag, i)
			resp, err := containersClient(d, w).Create(nsContext(ctx), &containers.CreateContainerRequest{Container: newContainer(id, i)})
			if err != nil {
				return fmt.Errorf("create %s: %w", id, err)
			}
			if got := resp.GetContainer().GetID(); got != id {
				return fmt.Errorf("create %s: answered container %q", id, got)
			}
			state[i] = acked
			return nil
		},
		after: func(ctx context.Context) (int, error) {
			failures, first := parallel(ctx, p.ops, 16, func(w, i int) error {
				if state[i] != acked {
					return nil
				}
				id := cellID(p.tag, i)
				resp, err := containersClient(d, w).Get(nsContext(ctx), &containers.GetContainerRequest{ID: id})
				if err != nil {
					return fmt.Errorf("acknowledged create of %s, then get: %w", id, err)
				}
				return sameContainer(resp.GetContainer(), newContainer(id, i))
			})
			f, err := parallel(ctx, p.ops, 16, func(w, i int) error {
				if state[i] == 0 {
					return nil
				}
				return deleteContainer(ctx, d, w, cellID(p.tag, i), state[i] != acked)
			})
			return failures + f, errors.Join(first, err)
		},
	}, nil
}

// getCell reads the setup's fixtures round robin.
func getCell(_ context.Context, d *daemon, _ cellParams) (*cell, error) {
	return &cell{op: func(ctx context.Context, w, i int) error {
		id := fixtureID(i % getFixtures)
		resp, err := containersClient(d, w).Get(nsContext(ctx), &containers.GetContainerRequest{ID: id})
		if err != nil {
			return fmt.Errorf("get %s: %w", id, err)
		}
		if c := resp.GetContainer(); c.GetID() != id || len(c.GetSpec().GetValue()) != len(specJSON(id)) {
			return fmt.Errorf("get %s: answered %q with a %d-byte spec", id, c.GetID(), len(c.GetSpec().GetValue()))
		}
		return nil
	}}, nil
}

// listCell lists the namespace's containers (the setup's fixtures) unfiltered.
func listCell(_ context.Context, d *daemon, _ cellParams) (*cell, error) {
	return &cell{op: func(ctx context.Context, w, _ int) error {
		resp, err := containersClient(d, w).List(nsContext(ctx), &containers.ListContainersRequest{})
		if err != nil {
			return fmt.Errorf("list: %w", err)
		}
		if n := len(resp.GetContainers()); n != listFixtures {
			return fmt.Errorf("list: %d containers, want %d", n, listFixtures)
		}
		return nil
	}}, nil
}

// listStreamCell is listCell through ListStream, which containerd's Go
// client (and so nerdctl and dockerd) calls first.
func listStreamCell(_ context.Context, d *daemon, _ cellParams) (*cell, error) {
	return &cell{op: func(ctx context.Context, w, _ int) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := containersClient(d, w).ListStream(nsContext(ctx), &containers.ListContainersRequest{})
		if err != nil {
			return fmt.Errorf("list stream: %w", err)
		}
		n := 0
		for {
			_, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("list stream after %d containers: %w", n, err)
			}
			n++
		}
		if n != listFixtures {
			return fmt.Errorf("list stream: %d containers, want %d", n, listFixtures)
		}
		return nil
	}}, nil
}

// deleteCell deletes ops containers that it creates beforehand (unmeasured).
// Afterwards every acknowledged delete must read back NotFound.
func deleteCell(ctx context.Context, d *daemon, p cellParams) (*cell, error) {
	if err := create(ctx, d, p.ops, func(i int) string { return cellID(p.tag, i) }); err != nil {
		return nil, err
	}
	deleted := make([]bool, p.ops) // index i is written only by the client running op i
	return &cell{
		op: func(ctx context.Context, w, i int) error {
			id := cellID(p.tag, i)
			if _, err := containersClient(d, w).Delete(nsContext(ctx), &containers.DeleteContainerRequest{ID: id}); err != nil {
				return fmt.Errorf("delete %s: %w", id, err)
			}
			deleted[i] = true
			return nil
		},
		after: func(ctx context.Context) (int, error) {
			return parallel(ctx, p.ops, 16, func(w, i int) error {
				id := cellID(p.tag, i)
				if !deleted[i] {
					return deleteContainer(ctx, d, w, id, true)
				}
				_, err := containersClient(d, w).Get(nsContext(ctx), &containers.GetContainerRequest{ID: id})
				if status.Code(err) != codes.NotFound {
					return fmt.Errorf("acknowledged delete of %s, then get: want NotFound, got %v", id, err)
				}
				return nil
			})
		},
	}, nil
}

// fixtures is a setup that creates n containers named fixtureID(i) and a
// teardown that deletes them.
func fixtures(n int) func(context.Context, *daemon) (func(context.Context) error, error) {
	return func(ctx context.Context, d *daemon) (func(context.Context) error, error) {
		if err := create(ctx, d, n, fixtureID); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			_, err := parallel(ctx, n, 16, func(w, i int) error { return deleteContainer(ctx, d, w, fixtureID(i), false) })
			return err
		}, nil
	}
}

// create makes n containers with 16 clients; any failure is fatal.
func create(ctx context.Context, d *daemon, n int, id func(int) string) error {
	_, err := parallel(ctx, n, 16, func(w, i int) error {
		_, err := containersClient(d, w).Create(nsContext(ctx), &containers.CreateContainerRequest{Container: newContainer(id(i), i)})
		if err != nil {
			return fmt.Errorf("%s: create %s: %w", d.name, id(i), err)
		}
		return nil
	})
	return err
}

// deleteContainer deletes id; with mayBeMissing, NotFound is fine.
func deleteContainer(ctx context.Context, d *daemon, w int, id string, mayBeMissing bool) error {
	_, err := containersClient(d, w).Delete(nsContext(ctx), &containers.DeleteContainerRequest{ID: id})
	if err != nil && !(mayBeMissing && status.Code(err) == codes.NotFound) {
		return fmt.Errorf("clean-up: delete %s: %w", id, err)
	}
	return nil
}

// sameContainer checks that what Get answered is what Create sent.
func sameContainer(got, want *containers.Container) error {
	switch {
	case got.GetID() != want.ID:
		return fmt.Errorf("get %s: answered %q", want.ID, got.GetID())
	case got.GetImage() != want.Image, got.GetRuntime().GetName() != want.Runtime.Name,
		got.GetSnapshotter() != want.Snapshotter, got.GetSnapshotKey() != want.SnapshotKey:
		return fmt.Errorf("get %s: image, runtime or snapshot differ from what was created: %v", want.ID, got)
	case got.GetSpec().GetTypeUrl() != want.Spec.TypeUrl || !bytes.Equal(got.GetSpec().GetValue(), want.Spec.Value):
		return fmt.Errorf("get %s: spec differs from what was created", want.ID)
	case !maps.Equal(got.GetLabels(), want.Labels):
		return fmt.Errorf("get %s: labels %v, created with %v", want.ID, got.GetLabels(), want.Labels)
	case got.GetCreatedAt() == nil || got.GetUpdatedAt() == nil:
		return fmt.Errorf("get %s: no created or updated time", want.ID)
	}
	return nil
}

// parallel runs fn(worker, i) for i in [0, n) on conc workers and returns
// how many calls failed and the first error.
func parallel(ctx context.Context, n, conc int, fn func(worker, i int) error) (int, error) {
	var (
		next     atomic.Int64
		failures atomic.Int64
		once     sync.Once
		first    error
		wg       sync.WaitGroup
	)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil {
					failures.Add(1)
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return int(failures.Load()), ctx.Err()
	}
	return int(failures.Load()), first
}
