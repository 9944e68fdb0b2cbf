package storage

import (
	"context"
	"io/fs"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/internal/snapshots"
)

// DiskUsage measures the tree at root: the number of distinct inodes in it
// (root included; hard links count once) and the disk space they take
// (allocated 512-byte blocks).
func DiskUsage(ctx context.Context, root string) (snapshots.Usage, error) {
	type inode struct{ dev, ino uint64 }
	var (
		usage snapshots.Usage
		seen  = map[inode]struct{}{}
		n     int
	)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			usage.Inodes++
			usage.Size += fi.Size()
			return nil
		}
		k := inode{uint64(st.Dev), uint64(st.Ino)}
		if _, ok := seen[k]; ok {
			return nil
		}
		seen[k] = struct{}{}
		usage.Inodes++
		usage.Size += int64(st.Blocks) * 512
		return nil
	})
	return usage, err
}
