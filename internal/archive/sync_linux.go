//go:build linux

package archive

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SyncFS flushes the whole filesystem that holds root with syncfs(2): one
// call after a layer is applied instead of an fsync per file.
func SyncFS(root string) error {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q for syncfs: %w", root, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %q: %w", root, err)
	}
	return nil
}
