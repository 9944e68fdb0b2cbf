// Package leases carries the client's lease through a request.
//
// A lease protects the resources created under it (content, ingests,
// snapshots) from garbage collection until it is deleted or expires. Clients
// send its ID in the gRPC metadata key "containerd-lease"; the server's
// interceptors check it with Validate and copy it into the context with
// WithLease; the metadata stores read it with FromContext and attach what
// they create to it.
//
// Lease IDs are not identifiers: ctr makes them from a random number and
// base64 ("178956091-Tn_-"), and `ctr images mount` uses the mount path
// ("/tmp/x/mnt"). They are only ever bbolt keys, never paths, so Validate
// bounds them without restricting their alphabet.
package leases

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// GRPCHeader is the gRPC metadata key holding the lease ID.
const GRPCHeader = "containerd-lease"

// MaxIDLength is the longest lease ID accepted, in bytes (PATH_MAX: ctr may
// use a path as the ID).
const MaxIDLength = 4096

type key struct{}

// WithLease returns a context that carries the lease id.
func WithLease(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// FromContext returns the lease in ctx, if any.
func FromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(key{}).(string)
	return id, ok && id != ""
}

// Validate accepts a lease ID that is not empty, at most MaxIDLength bytes
// of valid UTF-8, without control characters. Anything else is
// errdefs.ErrInvalidArgument.
func Validate(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("lease id must not be empty: %w", errdefs.ErrInvalidArgument)
	case len(id) > MaxIDLength:
		return fmt.Errorf("lease id %.64q… is %d bytes, longer than %d: %w", id, len(id), MaxIDLength, errdefs.ErrInvalidArgument)
	case !utf8.ValidString(id):
		return fmt.Errorf("lease id %q is not valid UTF-8: %w", id, errdefs.ErrInvalidArgument)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("lease id %q holds a control character: %w", id, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
