//go:build !linux

package mount

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Mount is not implemented off Linux.
func (m *Mount) Mount(target string) error {
	return fmt.Errorf("mount %s on %q: %w", m.Type, target, errdefs.ErrNotImplemented)
}

// Unmount is not implemented off Linux.
func Unmount(target string, flags int) error {
	return fmt.Errorf("unmount %q: %w", target, errdefs.ErrNotImplemented)
}

// UnmountAll is not implemented off Linux.
func UnmountAll(target string, flags int) error {
	if target == "" {
		return nil
	}
	return fmt.Errorf("unmount %q: %w", target, errdefs.ErrNotImplemented)
}
