package main

import (
	"path/filepath"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/plugin"
	containerssvc "github.com/berth-dev/berth/internal/services/containers"
	eventssvc "github.com/berth-dev/berth/internal/services/events"
	"github.com/berth-dev/berth/internal/services/introspection"
	namespacessvc "github.com/berth-dev/berth/internal/services/namespaces"
	versionsvc "github.com/berth-dev/berth/internal/services/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"os"
)

// builtins lists every plugin berthd has, in registration order. Each init
// receives its dependencies through typed lookups.
func builtins() []*plugin.Registration {
	return []*plugin.Registration{
		{
			Type: plugin.EventPlugin, ID: "exchange",
			InitFn: func(ic *plugin.InitContext) (any, error) { return events.NewExchange(), nil },
		},
		{
			Type: plugin.MetadataPlugin, ID: "bolt",
			Requires: []plugin.Type{plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				if err := os.MkdirAll(ic.Root, 0o711); err != nil {
					return nil, err
				}
				return metadata.Open(filepath.Join(ic.Root, "meta.db"))
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "version",
			InitFn: func(*plugin.InitContext) (any, error) { return &versionsvc.Service{}, nil },
		},
		{
			Type: plugin.GRPCPlugin, ID: "namespaces",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, ex, err := metadataAndExchange(ic)
				if err != nil {
					return nil, err
				}
				return namespacessvc.New(db.Namespaces(), ex), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "containers",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, ex, err := metadataAndExchange(ic)
				if err != nil {
					return nil, err
				}
				return containerssvc.New(db.Containers(), ex), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "events",
			Requires: []plugin.Type{plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				ex, err := plugin.Get[*events.Exchange](ic, plugin.EventPlugin, "exchange")
				if err != nil {
					return nil, err
				}
				return eventssvc.New(ex), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "healthcheck",
			InitFn: func(*plugin.InitContext) (any, error) { return healthService{health.NewServer()}, nil },
		},
		{
			Type: plugin.GRPCPlugin, ID: "introspection",
			Requires: []plugin.Type{plugin.AllPlugins},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				return introspection.New(ic.Plugins(), ic.Root)
			},
		},
	}
}

func metadataAndExchange(ic *plugin.InitContext) (*metadata.DB, *events.Exchange, error) {
	db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
	if err != nil {
		return nil, nil, err
	}
	ex, err := plugin.Get[*events.Exchange](ic, plugin.EventPlugin, "exchange")
	return db, ex, err
}

type healthService struct{ *health.Server }

func (h healthService) RegisterGRPC(g *grpc.Server) { healthpb.RegisterHealthServer(g, h.Server) }
