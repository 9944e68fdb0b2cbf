package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestUnaryInterceptor(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/x/Y"}
	in := func(ns string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(namespaces.GRPCHeader, ns))
	}
	_, err := unaryInterceptor(in("ok"), nil, info, func(ctx context.Context, req any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal {
		t.Errorf("panic answered %v, want Internal", err)
	}
	_, err = unaryInterceptor(in("ok"), nil, info, func(ctx context.Context, req any) (any, error) { return nil, errdefs.ErrNotFound })
	if status.Code(err) != codes.NotFound {
		t.Errorf("NotFound answered %v", err)
	}
	called := false
	_, err = unaryInterceptor(in("../x"), nil, info, func(ctx context.Context, req any) (any, error) { called = true; return nil, nil })
	if status.Code(err) != codes.InvalidArgument || called {
		t.Errorf("bad namespace: %v, handler called %v", err, called)
	}
	_, err = unaryInterceptor(in("good"), nil, info, func(ctx context.Context, req any) (any, error) {
		if ns, _ := namespaces.Namespace(ctx); ns != "good" {
			t.Errorf("namespace in handler %q", ns)
		}
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "berth-listen-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "sub", "s.sock")
	l, err := Listen(p, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v", fi.Mode())
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(p, 0, 0); !errdefs.IsAlreadyExists(err) {
		t.Errorf("listen on a live socket: %v", err)
	}
	// a stale socket: bound, then the listener goes away without unlinking
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(p, 0, 0)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	regular := filepath.Join(dir, "file")
	_ = os.WriteFile(regular, nil, 0o600)
	if _, err := Listen(regular, 0, 0); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("listen over a regular file: %v", err)
	}
}
