package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestSnapshotsCrashLoop: berthd is killed (SIGKILL) while clients prepare
// snapshots, three times over. After each restart every Prepare that was
// answered before the kill is listed and mountable (no acknowledged write
// lost) and every listed snapshot's directories exist (no half-made
// snapshot visible). Once all are removed and a collection has run, the snapshotter holds no directory.
// This is the path where berthd writes a snapshot's record and makes the
// backend snapshot at the same time (SnapshotStore.Recover at start-up).
func TestSnapshotsCrashLoop(t *testing.T) {
	d := testutil.StartDaemon(t)
	const sn = "overlayfs"
	ctx := nsCtx(t, "crash")
	gcRoot := map[string]string{"containerd.io/gc.root": "crash-test"}
	dir := filepath.Join(d.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	for round := range 3 {
		sc := snapshotsapi.NewSnapshotsClient(d.Conn(t))
		var (
			mu    sync.Mutex
			acked []string
			wg    sync.WaitGroup
		)
		// the clients go on until berthd is gone
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					key := fmt.Sprintf("r%d-g%d-%d", round, g, i)
					ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := sc.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: sn, Key: key, Labels: gcRoot})
					cancel()
					if err != nil {
						return
					}
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
				}
			}()
		}
		// kill at a different point of the stream each round
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 20+round*7 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		d.Kill()
		wg.Wait()
		if len(acked) == 0 {
			t.Fatalf("round %d: no Prepare answered before the kill", round)
		}
		if round == 0 {
			// what a kill leaves at worst, whether or not this one did: a
			// creation's directory and one renamed to an id never recorded
			for _, name := range []string{"new-planted", "999999"} {
				if err := os.MkdirAll(filepath.Join(dir, name, "fs"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		d.Start()

		sc = snapshotsapi.NewSnapshotsClient(d.Conn(t))
		listed := listSnapshots(t, ctx, sc, sn)
		for _, key := range acked {
			if !listed[key] {
				t.Errorf("round %d: snapshot %s was prepared before the kill but is not listed after the restart", round, key)
			}
		}
		for key := range listed {
			resp, err := sc.Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: sn, Key: key})
			if err != nil {
				t.Errorf("round %d: mounts of listed snapshot %s: %v", round, key, err)
				continue
			}
			for _, p := range mountDirs(resp) {
				if _, err := os.Stat(p); err != nil {
					t.Errorf("round %d: listed snapshot %s: its directory: %v", round, key, err)
				}
			}
		}
		t.Logf("round %d: %d prepared before the kill, %d listed after the restart", round, len(acked), len(listed))
	}

	// every snapshot can be removed; with a collection, nothing is left
	sc := snapshotsapi.NewSnapshotsClient(d.Conn(t))
	for key := range listSnapshots(t, ctx, sc, sn) {
		if _, err := sc.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: sn, Key: key}); err != nil {
			t.Errorf("remove %s: %v", key, err)
		}
	}
	if left := listSnapshots(t, ctx, sc, sn); len(left) != 0 {
		t.Errorf("snapshots listed after removing all: %v", left)
	}
	lc := leasesapi.NewLeasesClient(d.Conn(t))
	l, err := lc.Create(ctx, &leasesapi.CreateRequest{ID: "crash-gc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Delete(ctx, &leasesapi.DeleteRequest{ID: l.Lease.ID, Sync: true}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("snapshot directories left after removing every snapshot and a collection: %v", names)
	}
}

// listSnapshots returns the keys of sn's snapshots in ctx's namespace.
func listSnapshots(t *testing.T, ctx context.Context, sc snapshotsapi.SnapshotsClient, sn string) map[string]bool {
	t.Helper()
	stream, err := sc.List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: sn})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range resp.Info {
			keys[info.Name] = true
		}
	}
}

// mountDirs returns the directories a snapshot's mounts name: a bind
// mount's source, an overlay's upperdir and workdir.
func mountDirs(resp *snapshotsapi.MountsResponse) []string {
	var dirs []string
	for _, m := range resp.Mounts {
		if m.Type == "bind" {
			dirs = append(dirs, m.Source)
		}
		for _, o := range m.Options {
			if k, v, ok := strings.Cut(o, "="); ok && (k == "upperdir" || k == "workdir") {
				dirs = append(dirs, v)
			}
		}
	}
	return dirs
}
