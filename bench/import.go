package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// snapshotter is the snapshotter both daemons unpack into and run from:
// each one's default.
const snapshotter = "overlayfs"

// importNoUnpack: `ctr images import --no-unpack` of the big image.
func importNoUnpack(ctx context.Context, e *sysEnv) error {
	return importRow(ctx, e, false)
}

// importUnpack: `ctr images import` of the big image, unpacked into overlayfs.
func importUnpack(ctx context.Context, e *sysEnv) error {
	return importRow(ctx, e, true)
}

// importRow times the import of the big image on each daemon, then removes
// the image with `ctr images rm --sync` (a synchronous garbage collection)
// and checks that the layer, and the unpacked snapshot, are gone, so that
// every repetition imports and unpacks from nothing.
func importRow(ctx context.Context, e *sysEnv, unpack bool) error {
	img := e.big
	if img == nil {
		return fmt.Errorf("the big image was not written")
	}
	name, goal := "images import --no-unpack", 0.7
	args := []string{"images", "import", "--no-unpack", img.path}
	if unpack {
		name, goal = "images import (unpack)", 0.5
		args = []string{"images", "import", img.path}
	}
	name += fmt.Sprintf(", %.0f MB gzip layer", float64(img.gzBytes)/1e6)
	r := e.addRow(&sysRow{Name: name, Unit: "s"})
	var logs [2]*eventLog
	for i, d := range e.ds {
		var err error
		if logs[i], err = subscribe(ctx, d); err != nil {
			return err
		}
		defer logs[i].stop()
	}
	var starts [2][]time.Time
	var took [2][]float64
	err := e.pairs(ctx, r, e.o.Reps, func(ctx context.Context, d *daemon, _ int) (float64, error) {
		if err := imageGone(ctx, d, img, unpack); err != nil {
			return 0, fmt.Errorf("before the import: %w", err)
		}
		settle()
		starts[e.index(d)] = append(starts[e.index(d)], time.Now())
		t, err := e.ctr(ctx, d, args...)
		if err != nil {
			return 0, err
		}
		took[e.index(d)] = append(took[e.index(d)], float64(t.Microseconds())/1000)
		if err := imagePresent(ctx, d, img, unpack); err != nil {
			return 0, err
		}
		if _, err := e.ctr(ctx, d, "images", "rm", "--sync", img.ref); err != nil {
			return 0, err
		}
		if err := imageGone(ctx, d, img, unpack); err != nil {
			return 0, fmt.Errorf("after images rm --sync: %w", err)
		}
		return t.Seconds(), nil
	})
	if err != nil {
		return err
	}
	e.rep.Phases = append(e.rep.Phases, phaseTable{Title: "ctr " + strings.Join(args[:len(args)-1], " "), Rows: phases(logs, starts, took)})
	e.atMost(name, fmt.Sprintf("berthd ≤ %.1f× containerd's time", goal), r.Ratio, goal)
	return nil
}

// imagePresent checks that the layer blob (and with unpack, its snapshot)
// is there.
func imagePresent(ctx context.Context, d *daemon, img *imageFile, unpack bool) error {
	if _, err := contentapi.NewContentClient(d.conn(0)).Info(nsContext(ctx), &contentapi.InfoRequest{Digest: img.layer.String()}); err != nil {
		return fmt.Errorf("%s: layer %s after the import: %w", d.name, img.layer, err)
	}
	if unpack {
		if _, err := snapshotsapi.NewSnapshotsClient(d.conn(0)).Stat(nsContext(ctx), &snapshotsapi.StatSnapshotRequest{Snapshotter: snapshotter, Key: img.chainID.String()}); err != nil {
			return fmt.Errorf("%s: snapshot %s after the import: %w", d.name, img.chainID, err)
		}
	}
	return nil
}

// imageGone waits up to 5 s for the layer blob and the snapshot to be
// NotFound.
func imageGone(ctx context.Context, d *daemon, img *imageFile, snapshot bool) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, cerr := contentapi.NewContentClient(d.conn(0)).Info(nsContext(ctx), &contentapi.InfoRequest{Digest: img.layer.String()})
		var serr error
		if snapshot {
			_, serr = snapshotsapi.NewSnapshotsClient(d.conn(0)).Stat(nsContext(ctx), &snapshotsapi.StatSnapshotRequest{Snapshotter: snapshotter, Key: img.chainID.String()})
		}
		if status.Code(cerr) == codes.NotFound && (!snapshot || status.Code(serr) == codes.NotFound) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: still there after 5 s: layer blob (%v), snapshot (%v)", d.name, cerr, serr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
