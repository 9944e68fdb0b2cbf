package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestDirectoryModes: berthd's root is for root alone and its state only
// traversable (containerd's CVE-2024-25621), each plugin's directory in the
// root is 0700, and a task's bundle is 0700 with its rootfs 0711 (a
// traversable bundle let host users reach setuid binaries in a rootfs,
// CVE-2021-41103). A root left looser by an earlier version is tightened at
// start-up; a state inside the root is refused.
func TestDirectoryModes(t *testing.T) {
	e := newTaskEnv(t, "containerd-shim-berth-v2")
	for d, mode := range map[string]os.FileMode{e.d.Root: 0o700, e.d.State: 0o711} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s as berthd made it: %v %v, want %o", d, fi.Mode().Perm(), err, mode)
		}
	}
	e.d.Stop()
	if err := os.Chmod(e.d.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	e.d.Start()
	e.ts = tasks.NewTasksClient(e.d.Conn(t))
	e.create("modes", "sleep", "1000")
	if _, err := e.ts.Start(e.ctx(), &tasks.StartRequest{ContainerID: "modes"}); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.ns, "modes")
	want := map[string]os.FileMode{
		e.d.Root:                        0o700,
		e.d.State:                       0o711,
		bundle:                          0o700,
		filepath.Join(bundle, "rootfs"): 0o711,
		filepath.Join(e.d.State, "io.containerd.runtime.v2.task"): 0o711,
	}
	plugins, err := os.ReadDir(e.d.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plugins {
		if p.IsDir() {
			want[filepath.Join(e.d.Root, p.Name())] = 0o700
		}
	}
	if len(plugins) < 5 {
		t.Fatalf("only %d entries in the root", len(plugins))
	}
	for p, mode := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), mode)
		}
	}

	out, err := exec.Command(testutil.Binary(t, "berthd"), "--root", e.d.Root+"-x", "--state", e.d.Root+"-x/state",
		"--address", e.d.Address+"-x", "--config", filepath.Join(e.d.Dir, "none.toml")).CombinedOutput()
	t.Cleanup(func() { os.RemoveAll(e.d.Root + "-x") })
	if err == nil || !strings.Contains(string(out), "must not be the root") {
		t.Errorf("berthd with its state inside its root: %v\n%s", err, out)
	}
}
