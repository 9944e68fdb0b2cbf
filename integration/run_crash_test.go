package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestCtrRunCrashLoop: berthd is killed twice while two `ctr run --rm`
// loops and one `ctr run -d` loop go on, so that kills land in every step
// of a container's life: snapshot, container, task creation and start, and
// the task, container and snapshot removals. After each restart and a
// collection, every active snapshot belongs to a container or to the lease
// of a run cut short (as with containerd's client, a container may have
// lost its snapshot, which the client removes first). Once everything and
// the leases are removed, no active snapshot, bundle or mount is left.
func TestCtrRunCrashLoop(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	testutil.RequireBinary(t, "runc")
	d := testutil.StartDaemon(t)
	t.Cleanup(func() { cleanTasks(t, d, "crash") })
	ctr := func(args ...string) string {
		t.Helper()
		out, err := d.Ctr(append([]string{"-n", "crash"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ctr("images", "import", busyboxArchive(t))
	for round := range 2 {
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			runs   int
			killed bool
		)
		loop := func(g int, args ...string) {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%d-g%d-%d", round, g, i)
				a := append(append([]string{"-n", "crash", "run"}, args...), busyboxRef, id, "true")
				_, err := d.Ctr(a...)
				mu.Lock()
				if err == nil {
					runs++
				} else if !killed {
					t.Errorf("round %d: before the kill: %v", round, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}
		wg.Add(3)
		go loop(0, "--rm")
		go loop(1, "--rm")
		go loop(2, "-d")
		deadline := time.Now().Add(time.Minute)
		for {
			mu.Lock()
			n := runs
			mu.Unlock()
			if n >= 4+round*3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: only %d runs within a minute", round, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		killed = true
		mu.Unlock()
		d.Kill()
		wg.Wait()
		d.Start()
		// a collection removes what the kill left unreferenced
		ctr("leases", "create", "--id", "gc")
		ctr("leases", "rm", "--sync", "gc")

		containers := map[string]bool{}
		for _, line := range strings.Split(ctr("containers", "ls", "-q"), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				containers[line] = true
			}
		}
		leased := leasedSnapshots(t, d, "crash")
		active := regexp.MustCompile(`(?m)^(\S+)\s+\S+\s+Active`).FindAllStringSubmatch(ctr("snapshots", "ls"), -1)
		activeKeys := map[string]bool{}
		for _, m := range active {
			activeKeys[m[1]] = true
			// a run cut short leaves the client's lease (24 h) on its
			// snapshot, as with containerd; anything else is collected
			if !containers[m[1]] && !leased[m[1]] {
				t.Errorf("round %d: active snapshot %s belongs to no container and no lease", round, m[1])
			}
		}
		for id := range containers {
			if !activeKeys[id] {
				// the client removes the snapshot before the container
				// (WithSnapshotCleanup); a kill in between leaves this
				t.Logf("round %d: container %s has no snapshot", round, id)
			}
		}
		t.Logf("round %d: %d runs before the kill; %d containers after the restart", round, runs, len(containers))
	}

	// everything goes
	for _, line := range strings.Split(ctr("tasks", "ls", "-q"), "\n") {
		if id := strings.TrimSpace(line); id != "" {
			_, _ = d.Ctr("-n", "crash", "tasks", "kill", "-s", "SIGKILL", id)
			_, _ = d.Ctr("-n", "crash", "tasks", "rm", "-f", id)
		}
	}
	for _, line := range strings.Split(ctr("containers", "ls", "-q"), "\n") {
		if id := strings.TrimSpace(line); id != "" {
			ctr("containers", "rm", id)
		}
	}
	// the leases of runs cut short, then a collection
	for _, line := range strings.Split(ctr("leases", "ls", "-q"), "\n") {
		if id := strings.TrimSpace(line); id != "" {
			ctr("leases", "rm", id)
		}
	}
	ctr("leases", "create", "--id", "gc2")
	ctr("leases", "rm", "--sync", "gc2")
	if ls := ctr("snapshots", "ls"); strings.Contains(ls, "Active") {
		t.Errorf("active snapshots left:\n%s", ls)
	}
	// a deleted task's bundle goes just after the answer
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		bundles, _ := os.ReadDir(filepath.Join(d.State, "io.containerd.runtime.v2.task", "crash"))
		mounts := mountsUnder(d.Dir)
		if len(bundles) == 0 && len(mounts) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after removing everything: %d bundles; mounts %v", len(bundles), mounts)
		}
	}
}

// leasedSnapshots lists the snapshot keys that leases of ns hold.
func leasedSnapshots(t *testing.T, d *testutil.Daemon, ns string) map[string]bool {
	t.Helper()
	lc := leasesapi.NewLeasesClient(d.Conn(t))
	ctx := nsCtx(t, ns)
	list, err := lc.List(ctx, &leasesapi.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range list.Leases {
		res, err := lc.ListResources(ctx, &leasesapi.ListResourcesRequest{ID: l.ID})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Resources {
			if strings.HasPrefix(r.Type, "snapshots/") {
				keys[r.ID] = true
			}
		}
	}
	return keys
}
