// Package version serves containerd.services.version.v1.Version.
package version

import (
	"context"

	api "github.com/containerd/containerd/api/services/version/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/berth-dev/berth/internal/version"
)

// Service answers Version.
type Service struct {
	api.UnimplementedVersionServer
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterVersionServer(g, s) }

// Version returns berth's version and revision.
func (s *Service) Version(context.Context, *emptypb.Empty) (*api.VersionResponse, error) {
	return &api.VersionResponse{Version: version.Version, Revision: version.Revision}, nil
}
