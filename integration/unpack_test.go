package integration

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestCtrImportUnpackSnapshots: ctr's import unpacks through Snapshots and
// Diff; the snapshots are listed, mounted and collected with the image.
func TestCtrImportUnpackSnapshots(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	ctr := func(args ...string) string {
		t.Helper()
		out, err := d.Ctr(append([]string{"-n", "unpack"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := ctr("images", "import", busyboxArchive(t))
	mustContain(t, out, "unpacking", "done")
	out = ctr("snapshots", "ls")
	m := regexp.MustCompile(`(?m)^(sha256:[0-9a-f]{64})\s+(\S*)\s+Committed`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no committed layer snapshot:\n%s", out)
	}
	chain := m[1]
	mustContain(t, ctr("snapshots", "info", chain), `"Kind": "Committed"`, chain)
	mustContain(t, ctr("snapshots", "usage", chain), chain)
	// unpacking again is skipped: the chain is there
	ctr("images", "import", busyboxArchive(t))

	// ctr images mount: a view of the image, mounted by ctr itself
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctr("images", "mount", busyboxRef, dir)
	fi, err := os.Stat(filepath.Join(dir, "bin", "busybox"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("busybox in the mounted image: %v %v", fi, err)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "bin", "sh")); target != "busybox" {
		t.Errorf("bin/sh links to %q", target)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp not sticky: %v %v", fi, err)
	}
	mustContain(t, ctr("snapshots", "ls"), dir, "View")
	ctr("images", "unmount", "--rm", dir)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("mount point not empty after unmount: %v", entries)
	}

	// snapshots prepare/commit/rm through ctr
	ctr("snapshots", "prepare", "work", chain)
	mounts := ctr("snapshots", "mounts", "/tmp/x", "work")
	mustContain(t, mounts, "mount -t overlay", "upperdir=", "lowerdir=")
	if out, err := d.Ctr("-n", "unpack", "snapshots", "rm", chain); err == nil {
		t.Errorf("removing a parent succeeded:\n%s", out)
	}
	ctr("snapshots", "commit", "work-done", "work")
	ctr("snapshots", "rm", "work-done")

	// removing the image lets GC remove its snapshots
	ctr("images", "rm", "--sync", busyboxRef)
	out = ctr("snapshots", "ls")
	if strings.Contains(out, "sha256:") {
		t.Errorf("snapshots left after images rm --sync:\n%s", out)
	}
	snapDir := filepath.Join(d.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
	if entries, _ := os.ReadDir(snapDir); len(entries) != 0 {
		t.Errorf("overlay snapshot directories left: %d", len(entries))
	}
}

var taskTopic = regexp.MustCompile(`\s(/tasks/[a-z-]+)\s`)

// TestCtrRun: `ctr run` of the imported image, through each shim.
func TestCtrRun(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			d := shimDaemon(t, shim)
			if out, err := d.Ctr("images", "import", busyboxArchive(t)); err != nil {
				t.Fatalf("import: %v\n%s", err, out)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			evcmd := exec.CommandContext(ctx, "ctr", "-a", d.Address, "events")
			evout, err := evcmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := evcmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = evcmd.Wait() }()
			time.Sleep(200 * time.Millisecond)
			out, err := d.Ctr("run", "--rm", busyboxRef, "hello", "echo", "hi from berth")
			if err != nil || strings.TrimSpace(out) != "hi from berth" {
				t.Fatalf("ctr run: %v\n%q", err, out)
			}
			// ctr events: create, start, exit, delete of the task, in order, one exit
			var topics []string
			sc := bufio.NewScanner(evout)
			deadline := time.AfterFunc(10*time.Second, cancel)
			for sc.Scan() {
				if m := taskTopic.FindStringSubmatch(sc.Text()); m != nil {
					topics = append(topics, m[1])
					if m[1] == "/tasks/delete" {
						break
					}
				}
			}
			deadline.Stop()
			if strings.Join(topics, " ") != "/tasks/create /tasks/start /tasks/exit /tasks/delete" {
				t.Errorf("ctr events for a short container: %v", topics)
			}
			out, err = d.Ctr("run", "--rm", busyboxRef, "fails", "sh", "-c", "exit 7")
			if err == nil || !strings.Contains(err.Error(), "exit status 7") {
				t.Fatalf("exit code: %v\n%s", err, out)
			}
			// nothing is left behind by --rm
			for _, args := range [][]string{{"containers", "ls", "-q"}, {"tasks", "ls", "-q"}} {
				if out, _ := d.Ctr(args...); strings.TrimSpace(out) != "" {
					t.Errorf("ctr %v after run --rm: %q", args, out)
				}
			}
			out, _ = d.Ctr("snapshots", "ls")
			if strings.Contains(out, "hello") || strings.Contains(out, "fails") {
				t.Errorf("container snapshots left:\n%s", out)
			}
		})
	}
}
