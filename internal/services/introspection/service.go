// Package introspection serves containerd.services.introspection.v1:
// the plugins of this daemon with their state, and the server's identity.
//
// Invariant: the server UUID is created once, kept in <dir>/uuid, and is the
// same across restarts of a daemon on the same root.
package introspection

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/plugin"
	api "github.com/containerd/containerd/api/services/introspection/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Service answers Plugins and Server.
type Service struct {
	api.UnimplementedIntrospectionServer
	plugins *plugin.Set
	uuid    string
}

// New returns the service for set, keeping its UUID under dir.
func New(set *plugin.Set, dir string) (*Service, error) {
	id, err := loadUUID(dir)
	if err != nil {
		return nil, err
	}
	return &Service{plugins: set, uuid: id}, nil
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterIntrospectionServer(g, s) }

func loadUUID(dir string) (string, error) {
	p := filepath.Join(dir, "uuid")
	if b, err := os.ReadFile(p); err == nil {
		id := strings.TrimSpace(string(b))
		if _, err := uuid.Parse(id); err == nil {
			return id, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	id := uuid.NewString()
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	_, err = f.WriteString(id)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	return id, err
}

// Plugins lists the plugins matching any of the request's filters
// (fields: type, id, capabilities, platforms).
func (s *Service) Plugins(ctx context.Context, req *api.PluginsRequest) (*api.PluginsResponse, error) {
	f, err := filters.ParseAll(req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &api.PluginsResponse{}
	for _, p := range s.plugins.All() {
		pp := toProto(p)
		if f.Match(adaptor(pp)) {
			resp.Plugins = append(resp.Plugins, pp)
		}
	}
	return resp, nil
}

func toProto(p *plugin.Plugin) *api.Plugin {
	r := p.Registration
	pp := &api.Plugin{
		Type:         string(r.Type),
		ID:           r.ID,
		Exports:      p.Meta.Exports,
		Capabilities: p.Meta.Capabilities,
	}
	for _, t := range r.Requires {
		pp.Requires = append(pp.Requires, string(t))
	}
	for _, pl := range p.Meta.Platforms {
		pp.Platforms = append(pp.Platforms, &types.Platform{OS: pl.OS, Architecture: pl.Architecture, Variant: pl.Variant})
	}
	if err := p.Err(); err != nil {
		st := status.Convert(errgrpc.ToGRPC(err)).Proto()
		if plugin.IsSkipped(err) && !strings.HasPrefix(st.Message, "skip plugin") {
			st.Message = "skip plugin: " + st.Message
		}
		pp.InitErr = st
	}
	return pp
}

func adaptor(p *api.Plugin) filters.Adaptor {
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		if len(fp) == 0 {
			return "", false
		}
		switch fp[0] {
		case "type":
			return p.Type, true
		case "id":
			return p.ID, true
		case "capabilities":
			return strings.Join(p.Capabilities, ","), len(p.Capabilities) > 0
		case "platforms":
			var ps []string
			for _, pl := range p.Platforms {
				ps = append(ps, pl.OS+"/"+pl.Architecture)
			}
			return strings.Join(ps, ","), len(ps) > 0
		}
		return "", false
	})
}

// Server returns the daemon's UUID, pid and pid namespace.
func (s *Service) Server(context.Context, *emptypb.Empty) (*api.ServerResponse, error) {
	resp := &api.ServerResponse{UUID: s.uuid, Pid: uint64(os.Getpid())}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err == nil {
		resp.Pidns = st.Ino
	}
	return resp, nil
}
