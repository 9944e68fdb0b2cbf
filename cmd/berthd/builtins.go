package main

import (
	"context"
	"fmt"
	"github.com/berth-dev/berth/internal/gc"
	diffsvc "github.com/berth-dev/berth/internal/services/diff"
	snapshotssvc "github.com/berth-dev/berth/internal/services/snapshots"
	"github.com/berth-dev/berth/internal/snapshots"
	"github.com/berth-dev/berth/internal/snapshots/native"
	"github.com/berth-dev/berth/internal/snapshots/overlay"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/internal/content/local"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/plugin"
	"github.com/berth-dev/berth/internal/runtime"
	containerssvc "github.com/berth-dev/berth/internal/services/containers"
	contentsvc "github.com/berth-dev/berth/internal/services/content"
	eventssvc "github.com/berth-dev/berth/internal/services/events"
	imagessvc "github.com/berth-dev/berth/internal/services/images"
	"github.com/berth-dev/berth/internal/services/introspection"
	leasessvc "github.com/berth-dev/berth/internal/services/leases"
	namespacessvc "github.com/berth-dev/berth/internal/services/namespaces"
	taskssvc "github.com/berth-dev/berth/internal/services/tasks"
	versionsvc "github.com/berth-dev/berth/internal/services/version"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
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
				if err := os.MkdirAll(ic.Root, 0o700); err != nil {
					return nil, err
				}
				return metadata.Open(filepath.Join(ic.Root, "meta.db"))
			},
		},
		{
			// The blobs on disk, shared by all namespaces.
			Type: plugin.ContentPlugin, ID: "content",
			InitFn: func(ic *plugin.InitContext) (any, error) {
				ic.Meta.Exports = map[string]string{"root": ic.Root}
				return local.New(ic.Root)
			},
		},
		{
			// The blobs as clients see them: per namespace, with labels and leases.
			Type: plugin.ServicePlugin, ID: "content-service",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.ContentPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
				if err != nil {
					return nil, err
				}
				cs, err := plugin.Get[*local.Store](ic, plugin.ContentPlugin, "content")
				if err != nil {
					return nil, err
				}
				return metadata.NewContentStore(db, cs), nil
			},
		},
		{
			Type: plugin.SnapshotPlugin, ID: "overlayfs",
			InitFn: func(ic *plugin.InitContext) (any, error) {
				ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
				ic.Meta.Exports = map[string]string{"root": ic.Root}
				return overlay.New(ic.Root)
			},
		},
		{
			Type: plugin.SnapshotPlugin, ID: "native",
			InitFn: func(ic *plugin.InitContext) (any, error) {
				ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
				ic.Meta.Exports = map[string]string{"root": ic.Root}
				return native.New(ic.Root)
			},
		},
		{
			// The snapshotters as clients see them: per namespace, with leases.
			Type: plugin.ServicePlugin, ID: "snapshots-service",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.SnapshotPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
				if err != nil {
					return nil, err
				}
				stores := map[string]*metadata.SnapshotStore{}
				for name, sn := range plugin.All[snapshots.Snapshotter](ic.Plugins(), plugin.SnapshotPlugin) {
					st := metadata.NewSnapshotStore(db, name, sn)
					// records a crash left without their snapshot; the
					// collector sweeps snapshots left without a record
					if _, err := st.Recover(ic.Context); err != nil {
						log.G(ic.Context).WithError(err).WithField("snapshotter", name).Warn("recover snapshot records")
					}
					stores[name] = st
				}
				return snapshotStores(stores), nil
			},
		},
		{
			Type: plugin.GCPlugin, ID: "scheduler",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.ServicePlugin},
			Config:   gc.DefaultConfig(),
			InitFn: func(ic *plugin.InitContext) (any, error) {
				cfg := ic.Config.(*gc.Config)
				delay, err := time.ParseDuration(cfg.StartupDelay)
				if err != nil {
					return nil, fmt.Errorf("startup_delay %q: %w", cfg.StartupDelay, err)
				}
				db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
				if err != nil {
					return nil, err
				}
				cs, err := plugin.Get[*metadata.ContentStore](ic, plugin.ServicePlugin, "content-service")
				if err != nil {
					return nil, err
				}
				var snaps []*metadata.SnapshotStore
				if stores, err := plugin.Get[snapshotStores](ic, plugin.ServicePlugin, "snapshots-service"); err == nil {
					for _, st := range stores {
						snaps = append(snaps, st)
					}
				}
				c := gc.New(db, cs, delay, cfg.DeletionThreshold, snaps...)
				c.Start(context.WithoutCancel(ic.Context))
				return c, nil
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
			Type: plugin.GRPCPlugin, ID: "content",
			Requires: []plugin.Type{plugin.ServicePlugin, plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				cs, err := plugin.Get[*metadata.ContentStore](ic, plugin.ServicePlugin, "content-service")
				if err != nil {
					return nil, err
				}
				ex, err := plugin.Get[*events.Exchange](ic, plugin.EventPlugin, "exchange")
				if err != nil {
					return nil, err
				}
				return contentsvc.New(cs, ex), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "images",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.EventPlugin, plugin.GCPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, ex, err := metadataAndExchange(ic)
				if err != nil {
					return nil, err
				}
				c, err := plugin.Get[*gc.Collector](ic, plugin.GCPlugin, "scheduler")
				if err != nil {
					return nil, err
				}
				return imagessvc.New(db.Images(), ex, c), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "leases",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.GCPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
				if err != nil {
					return nil, err
				}
				c, err := plugin.Get[*gc.Collector](ic, plugin.GCPlugin, "scheduler")
				if err != nil {
					return nil, err
				}
				return leasessvc.New(db.Leases(), c), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "snapshots",
			Requires: []plugin.Type{plugin.ServicePlugin, plugin.MetadataPlugin, plugin.EventPlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, ex, err := metadataAndExchange(ic)
				if err != nil {
					return nil, err
				}
				stores, err := plugin.Get[snapshotStores](ic, plugin.ServicePlugin, "snapshots-service")
				if err != nil {
					return nil, err
				}
				return snapshotssvc.New(stores, db.Namespaces(), "overlayfs", ex), nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "diff",
			Requires: []plugin.Type{plugin.ServicePlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				cs, err := plugin.Get[*metadata.ContentStore](ic, plugin.ServicePlugin, "content-service")
				if err != nil {
					return nil, err
				}
				return diffsvc.New(cs), nil
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
			Type: plugin.RuntimePluginV2, ID: "task",
			Requires: []plugin.Type{plugin.EventPlugin},
			Config:   runtime.DefaultConfig(),
			InitFn: func(ic *plugin.InitContext) (any, error) {
				ex, err := plugin.Get[*events.Exchange](ic, plugin.EventPlugin, "exchange")
				if err != nil {
					return nil, err
				}
				ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
				m, err := runtime.New(runtime.Options{
					Root: ic.Root, State: ic.State, Address: ic.Env.GRPCAddress, TTRPCAddress: ic.Env.TTRPCAddress,
					Debug: ic.Env.Debug, Config: ic.Config.(*runtime.Config), Publisher: ex,
				})
				if err != nil {
					return nil, err
				}
				if err := m.Load(ic.Context); err != nil {
					return nil, err
				}
				m.Prepare()
				return m, nil
			},
		},
		{
			Type: plugin.GRPCPlugin, ID: "tasks",
			Requires: []plugin.Type{plugin.MetadataPlugin, plugin.RuntimePluginV2, plugin.ServicePlugin},
			InitFn: func(ic *plugin.InitContext) (any, error) {
				db, err := plugin.Get[*metadata.DB](ic, plugin.MetadataPlugin, "bolt")
				if err != nil {
					return nil, err
				}
				rt, err := plugin.Get[*runtime.Manager](ic, plugin.RuntimePluginV2, "task")
				if err != nil {
					return nil, err
				}
				cs, err := plugin.Get[*metadata.ContentStore](ic, plugin.ServicePlugin, "content-service")
				if err != nil {
					return nil, err
				}
				return taskssvc.New(db.Containers(), cs, rt), nil
			},
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

// snapshotStores are the namespaced snapshotters, by name.
type snapshotStores = map[string]*metadata.SnapshotStore

type healthService struct{ *health.Server }

func (h healthService) RegisterGRPC(g *grpc.Server) { healthpb.RegisterHealthServer(g, h.Server) }
