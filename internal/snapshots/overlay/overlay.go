// Package overlay is the overlayfs snapshotter, with containerd's
// semantics and mounts:
//
//   - every snapshot has a directory snapshots/<id>/fs: for an active
//     snapshot its upper directory, where all its changes land; an active
//     one also has snapshots/<id>/work, overlayfs's work directory;
//   - Prepare without a parent returns a "bind" mount of its fs ("rw",
//     "rbind"); with a parent chain, an "overlay" mount with options
//     "index=off" (when the kernel has the parameter), "userxattr" (only
//     inside a user namespace), "workdir=", "upperdir=" and "lowerdir=" the
//     parents' fs directories, nearest first;
//   - View without a parent is a read-only bind of its own empty fs; with
//     one parent, a read-only bind of that parent's fs; with more, an
//     overlay of the parents' fs directories alone (read-only by
//     construction);
//   - Commit measures the fs directory (the snapshot's own changes) and
//     records the snapshot as committed: its fs becomes a lower directory
//     of its children and is never written again;
//   - the fs directory of a new snapshot with a parent takes the owner and
//     mode of the parent's, so that the root of the merged tree keeps them.
//
// Chains of any length that overlayfs allows (hundreds of layers) mount:
// package mount shortens long lowerdir options itself.
//
// Records, directories, crash safety and Cleanup are package storage's.
package overlay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/storage"
)

// New opens the overlay snapshotter whose state lives under root.
func New(root string) (snapshots.Snapshotter, error) {
	d := &driver{
		layout:    storage.Layout(root),
		indexOff:  exists("/sys/module/overlay/parameters/index"),
		userxattr: inUserNamespace(),
	}
	return storage.New(root, d)
}

// Supported reports, with an error, whether overlayfs can be mounted with
// its layers under root, as the snapshotter will.
func Supported(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(root, "overlay-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var paths []string
	for _, n := range []string{"lower1", "lower2", "upper", "work", "merged"} {
		p := filepath.Join(dir, n)
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	m := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + paths[0] + ":" + paths[1], "upperdir=" + paths[2], "workdir=" + paths[3],
	}}
	if inUserNamespace() {
		m.Options = append(m.Options, "userxattr")
	}
	if err := m.Mount(paths[4]); err != nil {
		return fmt.Errorf("overlayfs is not usable on %q: %w", root, err)
	}
	return mount.UnmountAll(paths[4], 0)
}

type driver struct {
	layout    storage.Layout
	indexOff  bool
	userxattr bool
}

func (d *driver) Populate(ctx context.Context, dir string, kind snapshots.Kind, parentIDs []string) error {
	fs := filepath.Join(dir, "fs")
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	mode, uid, gid := os.FileMode(0o755), -1, -1
	if len(parentIDs) > 0 {
		fi, err := os.Stat(d.layout.FS(parentIDs[0]))
		if err != nil {
			return fmt.Errorf("parent directory: %w", err)
		}
		mode = fi.Mode()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	if err := os.Lchown(fs, uid, gid); err != nil {
		return err
	}
	// After the chown, which clears set-id bits; and not subject to umask.
	if err := os.Chmod(fs, mode&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	if kind == snapshots.KindActive {
		if err := os.Mkdir(filepath.Join(dir, "work"), 0o711); err != nil {
			return err
		}
	}
	return nil
}

func (d *driver) Mounts(s storage.Snapshot) []mount.Mount {
	if len(s.ParentIDs) == 0 {
		rw := "rw"
		if s.Kind == snapshots.KindView {
			rw = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: d.layout.FS(s.ID), Options: []string{rw, "rbind"}}}
	}
	if s.Kind == snapshots.KindView && len(s.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: d.layout.FS(s.ParentIDs[0]), Options: []string{"ro", "rbind"}}}
	}
	var opts []string
	if d.indexOff {
		opts = append(opts, "index=off")
	}
	if d.userxattr {
		opts = append(opts, "userxattr")
	}
	if s.Kind == snapshots.KindActive {
		opts = append(opts, "workdir="+d.layout.Work(s.ID), "upperdir="+d.layout.FS(s.ID))
	}
	lowers := make([]string, len(s.ParentIDs))
	for i, id := range s.ParentIDs {
		lowers[i] = d.layout.FS(id)
	}
	opts = append(opts, "lowerdir="+strings.Join(lowers, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// inUserNamespace reports whether the process runs in a user namespace
// other than the initial one, where overlayfs needs "userxattr" (Linux
// 5.11 and later) since trusted.* attributes are out of reach.
func inUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
