package main

import (
	"fmt"
	"io"
	"strings"

	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
)

func pluginsCommand() *cli.Command {
	return &cli.Command{
		Name:    "plugins",
		Aliases: []string{"plugin"},
		Usage:   "show berthd's plugins",
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list plugins: TYPE ID PLATFORMS STATUS (ok, skip or error)",
				ArgsUsage: "[FILTER…]",
				Description: `Filters use containerd's filter language, e.g. type==io.containerd.snapshotter.v1 or id==overlayfs.
	With --detailed, each plugin prints its requirements, exports, capabilities and the error that
	stopped it.`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "detailed", Aliases: []string{"d"}, Usage: "print everything about each plugin"},
					quietFlag(),
					jsonFlag(),
				},
				Action: pluginsList,
			},
		},
	}
}

// pluginView is a plugin as --json prints it.
type pluginView struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	Requires     []string          `json:"requires,omitempty"`
	Platforms    []string          `json:"platforms,omitempty"`
	Exports      map[string]string `json:"exports,omitempty"`
	Capabilities []string          `json:"capabilities,omitempty"`
	Status       string            `json:"status"`
	Error        *pluginError      `json:"error,omitempty"`
}

type pluginError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func newPluginView(p *introspectionapi.Plugin) pluginView {
	v := pluginView{
		Type:         p.GetType(),
		ID:           p.GetID(),
		Requires:     p.GetRequires(),
		Exports:      p.GetExports(),
		Capabilities: p.GetCapabilities(),
		Status:       "ok",
	}
	for _, pl := range p.GetPlatforms() {
		v.Platforms = append(v.Platforms, formatPlatform(pl))
	}
	if e := p.GetInitErr(); e != nil {
		v.Status = pluginStatus(e.GetMessage())
		v.Error = &pluginError{Code: codes.Code(e.GetCode()).String(), Message: e.GetMessage()}
	}
	return v
}

// pluginStatus is "skip" for plugins that declined to run here (containerd's
// ErrSkipPlugin, "skip plugin"), "error" for those that failed.
func pluginStatus(initErr string) string {
	if strings.Contains(initErr, "skip plugin") {
		return "skip"
	}
	return "error"
}

func formatPlatform(p *types.Platform) string {
	s := p.GetOS() + "/" + p.GetArchitecture()
	if p.GetVariant() != "" {
		s += "/" + p.GetVariant()
	}
	return s
}

// pluginsList calls Introspection.Plugins with the arguments as filters.
func pluginsList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := introspectionapi.NewIntrospectionClient(cl.conn).Plugins(ctx,
		&introspectionapi.PluginsRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "list", object{kind: "plugins"})
	}
	views := make([]pluginView, 0, len(resp.GetPlugins()))
	for _, p := range resp.GetPlugins() {
		views = append(views, newPluginView(p))
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, v := range views {
			fmt.Fprintf(w, "%s.%s\n", v.Type, v.ID)
		}
		return nil
	case c.Bool("detailed"):
		for i, v := range views {
			if i > 0 {
				fmt.Fprintln(w)
			}
			printPluginDetails(w, v)
		}
		return nil
	}
	t := newTable(w, "TYPE", "ID", "PLATFORMS", "STATUS")
	for _, v := range views {
		t.row(v.Type, v.ID, strings.Join(v.Platforms, ","), v.Status)
	}
	return t.flush()
}

// printPluginDetails prints one plugin as "Field:  value" lines, aligned the same for all.
func printPluginDetails(w io.Writer, v pluginView) {
	line := func(field, value string) { fmt.Fprintf(w, "%-14s%s\n", field, value) }
	line("Type:", v.Type)
	line("ID:", v.ID)
	line("Status:", v.Status)
	if len(v.Requires) > 0 {
		line("Requires:", strings.Join(v.Requires, ", "))
	}
	if len(v.Platforms) > 0 {
		line("Platforms:", strings.Join(v.Platforms, ", "))
	}
	if len(v.Capabilities) > 0 {
		line("Capabilities:", strings.Join(v.Capabilities, ", "))
	}
	for i, k := range sortedKeys(v.Exports) {
		field := ""
		if i == 0 {
			field = "Exports:"
		}
		line(field, k+"="+v.Exports[k])
	}
	if v.Error != nil {
		line("Error:", v.Error.Code+": "+v.Error.Message)
	}
}
