// Package plugin is berthd's registry of built-in parts.
//
// A Registration names a part by type and id (containerd's type strings, so
// `ctr plugins ls` reads the same), the plugin types it requires, its default
// config and its init function. Init initialises a list of registrations in
// dependency order. Invariants:
//   - a plugin is initialised after every plugin of each type it requires;
//   - a plugin whose init fails is kept in the Set with its error, and only the
//     plugins that require its type (when no plugin of that type succeeded) are
//     skipped; everything else starts;
//   - instances are fetched through typed lookups (Get, All), never handed out
//     as bare values to be asserted by callers.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Type is a plugin type, as containerd names them.
type Type string

// The plugin types berth registers.
const (
	EventPlugin       Type = "io.containerd.event.v1"
	MetadataPlugin    Type = "io.containerd.metadata.v1"
	ContentPlugin     Type = "io.containerd.content.v1"
	SnapshotPlugin    Type = "io.containerd.snapshotter.v1"
	DiffPlugin        Type = "io.containerd.differ.v1"
	GCPlugin          Type = "io.containerd.gc.v1"
	LeasePlugin       Type = "io.containerd.lease.v1"
	RuntimePluginV2   Type = "io.containerd.runtime.v2"
	ServicePlugin     Type = "io.containerd.service.v1"
	GRPCPlugin        Type = "io.containerd.grpc.v1"
	TTRPCPlugin       Type = "io.containerd.ttrpc.v1"
	InternalPlugin    Type = "io.containerd.internal.v1"
	TransferPlugin    Type = "io.containerd.transfer.v1"
	AllPlugins        Type = "*" // in Requires: after every other plugin
	skipMessagePrefix      = "skip plugin"
)

// ErrSkip is returned by an init function that chooses not to run here (a
// missing kernel feature, say); the plugin is listed as skipped.
var ErrSkip = errors.New(skipMessagePrefix)

// Registration describes one plugin.
type Registration struct {
	Type     Type
	ID       string
	Requires []Type
	// Config is a pointer to the plugin's default config; the section
	// [plugins."<type>.<id>"] of the daemon config is decoded into it.
	Config any
	InitFn func(*InitContext) (any, error)
}

// URI is "<type>.<id>", the plugin's name in config and on disk.
func (r *Registration) URI() string { return string(r.Type) + "." + r.ID }

// Meta is what a plugin reports about itself through introspection.
type Meta struct {
	Platforms    []ocispec.Platform
	Exports      map[string]string
	Capabilities []string
}

// Env is what every plugin may know of the daemon around it.
type Env struct {
	Root, State  string // the daemon's directories
	GRPCAddress  string // the daemon's sockets
	TTRPCAddress string
	Debug        bool // debug or trace logging
}

// InitContext is handed to an init function.
type InitContext struct {
	Context context.Context
	Env     Env
	// Root and State are the plugin's own directories, <root>/<type>.<id>
	// and <state>/<type>.<id>; they are created on first use by the plugin.
	Root, State string
	Config      any
	Meta        *Meta
	set         *Set
}

// Plugins returns the set initialised so far (for introspection).
func (ic *InitContext) Plugins() *Set { return ic.set }

// Plugin is one initialised (or failed) registration.
type Plugin struct {
	Registration *Registration
	Meta         Meta
	instance     any
	err          error
}

// Err is the init error, nil when the plugin runs.
func (p *Plugin) Err() error { return p.err }

// Instance returns what the init function returned.
func (p *Plugin) Instance() (any, error) { return p.instance, p.err }

// Set holds the plugins in initialisation order.
type Set struct {
	ordered []*Plugin
	byURI   map[string]*Plugin
}

// All returns every plugin, in initialisation order.
func (s *Set) All() []*Plugin { return s.ordered }

// Get returns the instance of plugin typ.id as T.
func Get[T any](ic *InitContext, typ Type, id string) (T, error) {
	var zero T
	p, ok := ic.set.byURI[string(typ)+"."+id]
	if !ok {
		return zero, fmt.Errorf("plugin %s.%s: %w", typ, id, errdefs.ErrNotFound)
	}
	if p.err != nil {
		return zero, fmt.Errorf("plugin %s.%s failed: %w", typ, id, p.err)
	}
	v, ok := p.instance.(T)
	if !ok {
		return zero, fmt.Errorf("plugin %s.%s is %T, not %T: %w", typ, id, p.instance, zero, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// All returns the running instances of typ that are T, by id.
func All[T any](s *Set, typ Type) map[string]T {
	out := map[string]T{}
	for _, p := range s.ordered {
		if p.Registration.Type != typ || p.err != nil {
			continue
		}
		if v, ok := p.instance.(T); ok {
			out[p.Registration.ID] = v
		}
	}
	return out
}

// Init initialises regs in dependency order. decode fills a registration's
// Config from the daemon config; disabled lists URIs not to load at all.
// Only a broken registry (a cycle, a duplicate) is an error here; failing
// plugins are recorded in the Set.
func Init(ctx context.Context, regs []*Registration, env Env, decode func(uri string, into any) error, disabled map[string]bool) (*Set, error) {
	ordered, err := sortRegistrations(regs)
	if err != nil {
		return nil, err
	}
	s := &Set{byURI: map[string]*Plugin{}}
	for _, r := range ordered {
		if disabled[r.URI()] {
			continue
		}
		p := &Plugin{Registration: r}
		s.ordered = append(s.ordered, p)
		s.byURI[r.URI()] = p
		if err := s.missingDependency(r); err != nil {
			p.err = err
			continue
		}
		if r.Config != nil && decode != nil {
			if err := decode(r.URI(), r.Config); err != nil {
				p.err = fmt.Errorf("config of %s: %w", r.URI(), err)
				continue
			}
		}
		ic := &InitContext{
			Context: ctx,
			Env:     env,
			Root:    filepath.Join(env.Root, r.URI()),
			State:   filepath.Join(env.State, r.URI()),
			Config:  r.Config,
			Meta:    &p.Meta,
			set:     s,
		}
		p.instance, p.err = safeInit(r, ic)
	}
	return s, nil
}

func safeInit(r *Registration, ic *InitContext) (v any, err error) {
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("plugin %s panicked during init: %v", r.URI(), rec)
		}
	}()
	return r.InitFn(ic)
}

// missingDependency reports a required type with plugins of which none runs.
func (s *Set) missingDependency(r *Registration) error {
	for _, t := range r.Requires {
		if t == AllPlugins {
			continue
		}
		var failed error
		ok := false
		for _, p := range s.ordered {
			if p.Registration.Type != t || p.Registration == r {
				continue
			}
			if p.err == nil {
				ok = true
				break
			}
			failed = p.err
		}
		if !ok && failed != nil {
			return fmt.Errorf("%s: requires %s, which failed: %v", skipMessagePrefix, t, failed)
		}
	}
	return nil
}

// sortRegistrations orders regs so each comes after the types it requires;
// stable otherwise, so the listing order is the order of registration.
func sortRegistrations(regs []*Registration) ([]*Registration, error) {
	seen := map[string]bool{}
	byType := map[Type][]*Registration{}
	for _, r := range regs {
		if seen[r.URI()] {
			return nil, fmt.Errorf("plugin %s registered twice: %w", r.URI(), errdefs.ErrAlreadyExists)
		}
		seen[r.URI()] = true
		byType[r.Type] = append(byType[r.Type], r)
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[*Registration]int{}
	var out []*Registration
	var visit func(r *Registration) error
	visit = func(r *Registration) error {
		switch state[r] {
		case visiting:
			return fmt.Errorf("plugin %s: dependency cycle", r.URI())
		case done:
			return nil
		}
		state[r] = visiting
		for _, t := range r.Requires {
			deps := byType[t]
			if t == AllPlugins {
				deps = nil
			}
			for _, d := range deps {
				if d == r {
					continue
				}
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		state[r] = done
		out = append(out, r)
		return nil
	}
	var last []*Registration
	for _, r := range regs {
		if contains(r.Requires, AllPlugins) {
			last = append(last, r)
			continue
		}
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	for _, r := range last {
		if err := visit(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func contains(ts []Type, t Type) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// IsSkipped tells whether err marks a skipped plugin rather than a failed one.
func IsSkipped(err error) bool {
	return err != nil && (errors.Is(err, ErrSkip) || strings.HasPrefix(err.Error(), skipMessagePrefix))
}
