// Package namespaces carries the client's namespace through a request.
//
// Clients send it in the gRPC metadata key "containerd-namespace", or over
// ttrpc in "containerd-namespace-ttrpc". The server's interceptors copy it
// into the context with WithNamespace; everything below reads it with
// Namespace or NamespaceRequired. A namespace in a context is always a valid
// identifier: the interceptors reject invalid ones before a handler runs.
package namespaces

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/containerd/errdefs"
)

const (
	// GRPCHeader is the gRPC metadata key holding the namespace.
	GRPCHeader = "containerd-namespace"
	// TTRPCHeader is the ttrpc metadata key holding the namespace.
	TTRPCHeader = "containerd-namespace-ttrpc"
	// Default is the namespace clients use when none is given.
	Default = "default"
)

type key struct{}

// WithNamespace returns a context that carries ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, key{}, ns)
}

// Namespace returns the namespace in ctx, if any.
func Namespace(ctx context.Context) (string, bool) {
	ns, ok := ctx.Value(key{}).(string)
	return ns, ok && ns != ""
}

// NamespaceRequired returns the namespace in ctx, or FailedPrecondition when
// the request named none, and InvalidArgument when it is not an identifier.
func NamespaceRequired(ctx context.Context) (string, error) {
	ns, ok := Namespace(ctx)
	if !ok {
		return "", fmt.Errorf("namespace is required (set the %s header): %w", GRPCHeader, errdefs.ErrFailedPrecondition)
	}
	if err := identifiers.Validate(ns); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	return ns, nil
}
