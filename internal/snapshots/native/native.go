// Package native is the copying snapshotter, for filesystems without
// overlayfs: every active snapshot is a full, independent tree.
//
//   - Prepare copies the parent's tree (if any) into the new snapshot's
//     snapshots/<id>/fs, preserving file types, modes (set-id and sticky
//     bits included), owners, extended attributes, hard links within the
//     tree, symlinks, device nodes, FIFOs and sockets, and access and
//     modification times; it returns a read-write bind mount of that fs;
//   - View with a parent copies nothing: it is a read-only bind mount of the
//     parent's fs, which never changes once committed; without a parent it
//     is a read-only bind of its own empty fs;
//   - Commit measures the whole tree (so Usage counts the copy of the
//     parent too) and records the snapshot as committed.
//
// The copy is made before the snapshot is recorded, outside any
// transaction, in a directory that Cleanup leaves alone while it is in
// use; see package storage for records, directories and crash safety.
package native

import (
	"context"
	"path/filepath"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/storage"
)

// New opens the native snapshotter whose state lives under root.
func New(root string) (snapshots.Snapshotter, error) {
	return storage.New(root, &driver{layout: storage.Layout(root)})
}

type driver struct {
	layout storage.Layout
}

func (d *driver) Populate(ctx context.Context, dir string, kind snapshots.Kind, parentIDs []string) error {
	fs := filepath.Join(dir, "fs")
	if kind == snapshots.KindActive && len(parentIDs) > 0 {
		return CopyTree(ctx, fs, d.layout.FS(parentIDs[0]))
	}
	return mkdirMode(fs, 0o755)
}

func (d *driver) Mounts(s storage.Snapshot) []mount.Mount {
	source, rw := d.layout.FS(s.ID), "rw"
	if s.Kind == snapshots.KindView {
		rw = "ro"
		if len(s.ParentIDs) > 0 {
			source = d.layout.FS(s.ParentIDs[0])
		}
	}
	return []mount.Mount{{Type: "bind", Source: source, Options: []string{"rbind", rw}}}
}
