// Package mount performs the mounts that snapshotters describe: bind mounts,
// overlayfs and anything else mount(2) takes with fstab-style options, as
// containerd's mount package does.
//
// A Mount is data: snapshotters return it, the Snapshots service sends it
// on the wire (types.Mount), and whoever needs the filesystem (the diff
// applier, the shim, a client) mounts it with All.
//
// Options are fstab style. Those naming a mount flag ("ro", "rw", "bind",
// "rbind", "nosuid", "nodev", "noexec", "remount", "private", "rshared", …)
// become flags; all others are joined with "," into the data string given
// to the filesystem (for overlay: "lowerdir=…", "upperdir=…", "workdir=…",
// "index=off", "userxattr").
//
// Invariants:
//   - a bind mount with "ro" is read-only: the bind is followed by a
//     read-only remount, since mount(2) ignores MS_RDONLY on MS_BIND;
//   - propagation flags are applied in a separate call after the mount;
//   - an overlay mount whose data does not fit in the one page mount(2)
//     copies (4096 bytes here) is performed with its lowerdir paths made
//     relative to their common parent directory and that directory as the
//     working directory of the mounting thread. The thread unshares its
//     filesystem attributes (CLONE_FS) first and is never unlocked, so the
//     changed working directory can not leak to other goroutines: Go ends
//     the thread with the goroutine. Overlays of 128 and more layers mount
//     this way;
//   - the target of a mount is made absolute before any working directory
//     changes.
package mount

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
)

// Mount is one mount to perform. For mounts of a snapshot Target is empty:
// the mount goes on the target directory given to All; otherwise it is a
// path below that directory.
type Mount struct {
	// Type is the filesystem type: "bind", "overlay", "tmpfs", …
	Type string
	// Source is the device, directory or name to mount ("overlay" for
	// overlay mounts, whose layers are in the options).
	Source string
	// Target is the path, relative to the directory given to All, to mount
	// on; empty for that directory itself.
	Target string
	// Options are fstab-style mount options.
	Options []string
}

// All mounts every mount on target, in order, stacking them when several
// share a target. A Mount with a Target is mounted below target (".." in it
// can not climb out). On failure the mounts already made
// by this call are unmounted again.
func All(mounts []Mount, target string) (err error) {
	var done []string
	defer func() {
		if err != nil {
			for _, p := range slices.Backward(done) {
				if uerr := Unmount(p, 0); uerr != nil {
					log.L.WithError(uerr).WithField("target", p).Warn("unmount after failed mount")
				}
			}
		}
	}()
	for _, m := range mounts {
		p := join(target, m.Target)
		if err := m.Mount(p); err != nil {
			return fmt.Errorf("mount %s %q on %q: %w", m.Type, m.Source, p, err)
		}
		done = append(done, p)
	}
	return nil
}

// join places a mount's own Target below the target directory: the Target
// is cleaned as if it were absolute first, so ".." can not climb out.
func join(target, sub string) string {
	if sub == "" {
		return target
	}
	return filepath.Join(target, filepath.Clean(string(filepath.Separator)+sub))
}

// WithTempMount mounts mounts on a new temporary directory, calls fn with
// it and unmounts and removes the directory again, whatever fn returns.
func WithTempMount(ctx context.Context, mounts []Mount, fn func(root string) error) (err error) {
	root, err := os.MkdirTemp("", "berth-mount-")
	if err != nil {
		return fmt.Errorf("temporary mount point: %w", err)
	}
	defer func() {
		if uerr := UnmountAll(root, 0); uerr != nil {
			uerr = fmt.Errorf("unmount temporary mount %q: %w", root, uerr)
			if err == nil {
				err = uerr
			} else {
				log.G(ctx).WithError(uerr).Error("leaving a mount behind")
			}
			return
		}
		if rerr := os.Remove(root); rerr != nil && err == nil {
			err = fmt.Errorf("remove temporary mount point: %w", rerr)
		}
	}()
	if err := All(mounts, root); err != nil {
		return err
	}
	return fn(root)
}

// WithReadonlyTempMount is WithTempMount with every mount made read-only.
func WithReadonlyTempMount(ctx context.Context, mounts []Mount, fn func(root string) error) error {
	ro := make([]Mount, len(mounts))
	for i, m := range mounts {
		ro[i] = readonly(m)
	}
	return WithTempMount(ctx, ro, fn)
}

// readonly returns m with "rw" dropped and "ro" added. An overlay also
// loses its upperdir and workdir, the upper directory becoming the topmost
// lower layer, so that nothing at all is written (overlayfs would still
// use its work directory).
func readonly(m Mount) Mount {
	var opts []string
	for _, o := range m.Options {
		if o == "rw" {
			continue
		}
		if m.Type == "overlay" && (strings.HasPrefix(o, "upperdir=") || strings.HasPrefix(o, "workdir=")) {
			continue
		}
		opts = append(opts, o)
	}
	if m.Type == "overlay" {
		// The former upper directory holds the newest changes: it becomes
		// the topmost lower layer.
		for _, o := range m.Options {
			if up, ok := strings.CutPrefix(o, "upperdir="); ok {
				for i, lo := range opts {
					if l, ok := strings.CutPrefix(lo, "lowerdir="); ok {
						opts[i] = "lowerdir=" + up + ":" + l
					}
				}
			}
		}
	}
	m.Options = append(opts, "ro")
	return m
}

// FromProto converts mounts received on the wire.
func FromProto(ms []*types.Mount) []Mount {
	if ms == nil {
		return nil
	}
	out := make([]Mount, 0, len(ms))
	for _, m := range ms {
		if m == nil {
			continue
		}
		out = append(out, Mount{
			Type:    m.Type,
			Source:  m.Source,
			Target:  m.Target,
			Options: slices.Clone(m.Options),
		})
	}
	return out
}

// ToProto converts mounts for the wire.
func ToProto(ms []Mount) []*types.Mount {
	if ms == nil {
		return nil
	}
	out := make([]*types.Mount, len(ms))
	for i, m := range ms {
		out[i] = &types.Mount{
			Type:    m.Type,
			Source:  m.Source,
			Target:  m.Target,
			Options: slices.Clone(m.Options),
		}
	}
	return out
}

// UnescapeMountinfo undoes the octal escapes (\040 for a space, …) of a
// path in /proc/*/mountinfo.
func UnescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
