// Package server assembles berthd's endpoints: the gRPC server on the main
// unix socket and the ttrpc server beside it, with every service registered
// in one place (New) and the interceptors every call goes through.
//
// Invariants:
//   - every request's namespace and lease headers are validated before a
//     handler runs, and reach the handler through the context;
//   - errors are converted to gRPC status codes once, here, from the errdefs
//     classes the domain packages wrap;
//   - a panic inside a handler answers Internal and the daemon keeps serving;
//   - the main socket is mode 0660; a socket held by a live daemon is never
//     taken over, a stale one is replaced.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/leases"
	"github.com/berth-dev/berth/internal/memtrim"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	streamWindow = 4 << 20
	readBuffer   = 256 << 10
)

// trimmer returns the memory a burst of requests left behind to the system
// once berthd has had no request for 500 ms, kept reply buffers included:
// the collector runs at its default target while berthd is busy (a lower
// one cost List and Get a third more CPU), and an idle berthd does not
// keep the peak.
var trimmer = memtrim.New(500*time.Millisecond, func() bool { return replies.drop() > 0 })

// GRPCService is implemented by plugins that serve gRPC.
type GRPCService interface{ RegisterGRPC(*grpc.Server) }

// TTRPCService is implemented by plugins that also serve over ttrpc.
type TTRPCService interface{ RegisterTTRPC(*ttrpc.Server) error }

// Server holds both endpoints.
type Server struct {
	cfg   *config.Config
	grpc  *grpc.Server
	ttrpc *ttrpc.Server
	lis   []net.Listener
}

// New builds the servers and registers services on them.
func New(cfg *config.Config, services []any) (*Server, error) {
	g := grpc.NewServer(
		grpc.ForceServerCodecV2(newCodec()),
		// Clients stream blobs in 1 MiB messages (Content.Write, one
		// message in flight): a static window of a few messages lets each
		// one flow without waiting for window updates, and a larger read
		// buffer takes it in fewer read(2)s. The buffer is pooled by gRPC,
		// held only while data is being read, not by idle connections.
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(2*streamWindow),
		grpc.ReadBufferSize(readBuffer),
		grpc.MaxRecvMsgSize(cfg.GRPC.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.GRPC.MaxSendMsgSize),
		grpc.ChainUnaryInterceptor(unaryInterceptor),
		grpc.ChainStreamInterceptor(streamInterceptor),
	)
	t, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(ttrpcInterceptor))
	if err != nil {
		return nil, err
	}
	for _, s := range services {
		if gs, ok := s.(GRPCService); ok {
			gs.RegisterGRPC(g)
		}
		if ts, ok := s.(TTRPCService); ok {
			if err := ts.RegisterTTRPC(t); err != nil {
				return nil, err
			}
		}
	}
	return &Server{cfg: cfg, grpc: g, ttrpc: t}, nil
}

// Serve listens on both sockets and serves until Stop. It returns once both
// listeners are up; serving errors are sent on the returned channel.
func (s *Server) Serve(ctx context.Context) (<-chan error, error) {
	gl, err := Listen(s.cfg.GRPC.Address, s.cfg.GRPC.UID, s.cfg.GRPC.GID)
	if err != nil {
		return nil, err
	}
	tl, err := Listen(s.cfg.TTRPCAddress(), s.cfg.GRPC.UID, s.cfg.GRPC.GID)
	if err != nil {
		gl.Close()
		return nil, err
	}
	s.lis = []net.Listener{gl, tl}
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(gl) }()
	go func() { errc <- s.ttrpc.Serve(ctx, tl) }()
	return errc, nil
}

// Stop stops accepting calls, lets running unary calls finish (up to the
// deadline of ctx), then closes streams and removes the sockets.
func (s *Server) Stop(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
	_ = s.ttrpc.Shutdown(ctx)
	_ = s.ttrpc.Close()
	os.Remove(s.cfg.GRPC.Address)
	os.Remove(s.cfg.TTRPCAddress())
}

// Listen opens a unix socket at path with mode 0660. It refuses a path where
// a live server answers, and replaces a stale socket file.
func Listen(path string, uid, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another --address: %w", path, errdefs.ErrFailedPrecondition)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another daemon is serving on %s; stop it or choose another --address: %w", path, errdefs.ErrAlreadyExists)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	if uid != 0 || gid != 0 {
		if err := os.Chown(path, uid, gid); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// withNamespace moves the namespace header into the context.
func withNamespace(ctx context.Context, ns string, present bool) (context.Context, error) {
	if !present {
		return ctx, nil
	}
	if err := identifiers.Validate(ns); err != nil {
		return ctx, fmt.Errorf("namespace: %w", err)
	}
	return namespaces.WithNamespace(ctx, ns), nil
}

// grpcHeaders moves the lease and namespace headers into the context.
func grpcHeaders(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(leases.GRPCHeader); len(v) > 0 && v[0] != "" {
		if err := leases.Validate(v[0]); err != nil {
			return ctx, fmt.Errorf("%s header: %w", leases.GRPCHeader, err)
		}
		ctx = leases.WithLease(ctx, v[0])
	}
	v := md.Get(namespaces.GRPCHeader)
	if len(v) == 0 {
		return ctx, nil
	}
	return withNamespace(ctx, v[0], true)
}

func recovered(ctx context.Context, method string, r any) error {
	log.G(ctx).WithField("method", method).Errorf("panic in handler: %v\n%s", r, debug.Stack())
	return status.Errorf(codes.Internal, "internal error in %s: %v", method, r)
}

func unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer trimmer.Touch()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, recovered(ctx, info.FullMethod, r)
		}
	}()
	if ctx, err = grpcHeaders(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err = h(ctx, req)
	return resp, errgrpc.ToGRPC(err)
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s serverStream) Context() context.Context { return s.ctx }

func streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer trimmer.Touch()
	defer func() {
		if r := recover(); r != nil {
			err = recovered(ss.Context(), info.FullMethod, r)
		}
	}()
	ctx, err := grpcHeaders(ss.Context())
	if err != nil {
		return errgrpc.ToGRPC(err)
	}
	return errgrpc.ToGRPC(h(srv, serverStream{ss, ctx}))
}

func ttrpcInterceptor(ctx context.Context, um ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (resp any, err error) {
	defer trimmer.Touch()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, recovered(ctx, info.FullMethod, r)
		}
	}()
	md, _ := ttrpc.GetMetadata(ctx)
	v, ok := md.Get(namespaces.TTRPCHeader)
	if ok && len(v) > 0 {
		if ctx, err = withNamespace(ctx, v[0], true); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	resp, err = m(ctx, um)
	return resp, errgrpc.ToGRPC(err)
}
