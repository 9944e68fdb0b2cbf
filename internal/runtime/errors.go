package runtime

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// FromShim turns a shim's ttrpc status into an errdefs error, so that the
// class (NotFound, FailedPrecondition…) reaches the client unchanged. A
// connection that closed under the call means the shim is gone:
// Unavailable, said so, rather than ttrpc's bare "closed".
func FromShim(err error) error {
	if errors.Is(err, ttrpc.ErrClosed) {
		return fmt.Errorf("the task's shim exited before it answered: %w", errdefs.ErrUnavailable)
	}
	return errgrpc.ToNative(err)
}
