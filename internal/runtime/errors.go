package runtime

import "github.com/containerd/errdefs/pkg/errgrpc"

// FromShim turns a shim's ttrpc status into an errdefs error, so that the
// class (NotFound, FailedPrecondition…) reaches the client unchanged.
func FromShim(err error) error { return errgrpc.ToNative(err) }
