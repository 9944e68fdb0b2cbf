package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// importBusybox is the setup of the snapshot workload: busybox imported and
// unpacked with ctr, so that its committed snapshot is a parent to prepare
// on. The image stays for the system rows.
func importBusybox(ctx context.Context, d *daemon) (func(context.Context) error, error) {
	e := d.sys
	if err := e.importOnce(ctx, d, e.busybox); err != nil {
		return nil, err
	}
	if _, err := snapshotsapi.NewSnapshotsClient(d.conn(0)).Stat(nsContext(ctx), &snapshotsapi.StatSnapshotRequest{Snapshotter: snapshotter, Key: e.busybox.chainID.String()}); err != nil {
		return nil, fmt.Errorf("busybox's snapshot %s after the import: %w", e.busybox.chainID, err)
	}
	return func(context.Context) error { return nil }, nil
}

// prepareCell prepares active snapshots on busybox's committed one and asks
// for their mounts, as a container start does (the client's Prepare, then
// the Mounts its task creation asks for). Like containerd's client (and
// ctr run), it holds a lease meanwhile: without one, a garbage collection
// may take a snapshot between its Prepare and its Mounts. Afterwards it
// removes the snapshots and the lease.
func prepareCell(ctx context.Context, d *daemon, p cellParams) (*cell, error) {
	parent := d.sys.busybox.chainID.String()
	sc := snapshotsapi.NewSnapshotsClient(d.conn(0))
	lc := leasesapi.NewLeasesClient(d.conn(0))
	lease := "bench-" + p.tag
	if _, err := lc.Create(nsContext(ctx), &leasesapi.CreateRequest{ID: lease, Labels: map[string]string{
		"containerd.io/gc.expire": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	}}); err != nil {
		return nil, fmt.Errorf("%s: create lease: %w", d.name, err)
	}
	var mu sync.Mutex
	var keys []string // attempted
	key := func(i int) string { return cellID("snap-"+p.tag, i) }
	return &cell{
		op: func(ctx context.Context, w, i int) error {
			k := key(i)
			mu.Lock()
			keys = append(keys, k)
			mu.Unlock()
			ctx = metadata.AppendToOutgoingContext(nsContext(ctx), "containerd-lease", lease)
			sc := snapshotsapi.NewSnapshotsClient(d.conn(w))
			if _, err := sc.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: snapshotter, Key: k, Parent: parent}); err != nil {
				return fmt.Errorf("prepare %s: %w", k, err)
			}
			m, err := sc.Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: snapshotter, Key: k})
			if err != nil {
				return fmt.Errorf("mounts %s: %w", k, err)
			}
			if len(m.GetMounts()) != 1 || m.GetMounts()[0].GetType() != "overlay" {
				return fmt.Errorf("mounts %s: want one overlay mount on a parent, got %v", k, m.GetMounts())
			}
			return nil
		},
		after: func(ctx context.Context) (int, error) {
			n, err := parallel(ctx, len(keys), 16, func(_, i int) error {
				_, err := sc.Remove(nsContext(ctx), &snapshotsapi.RemoveSnapshotRequest{Snapshotter: snapshotter, Key: keys[i]})
				if err != nil && status.Code(err) != codes.NotFound {
					return fmt.Errorf("clean-up: remove %s: %w", keys[i], err)
				}
				return nil
			})
			if _, lerr := lc.Delete(nsContext(ctx), &leasesapi.DeleteRequest{ID: lease}); lerr != nil {
				n++
				err = errors.Join(err, fmt.Errorf("clean-up: delete lease %s: %w", lease, lerr))
			}
			// removals start a garbage collection in the background: let it
			// finish before the other daemon's cell.
			time.Sleep(500 * time.Millisecond)
			return n, err
		},
	}, nil
}
