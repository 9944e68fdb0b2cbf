package main

import (
	"fmt"
	"runtime"

	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/emptypb"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "print the client's and berthd's versions",
		Flags:  []cli.Flag{jsonFlag()},
		Action: versionAction,
	}
}

type versionView struct {
	Client struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	} `json:"client"`
	Server *serverView `json:"server,omitempty"`
}

type serverView struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`
	UUID     string `json:"uuid"`
}

// versionAction prints the client version, then asks Version.Version and
// Introspection.Server (for the daemon's UUID), as ctr does.
func versionAction(c *cli.Context) error {
	var v versionView
	v.Client.Version = clientVersion()
	v.Client.GoVersion = runtime.Version()
	w := c.App.Writer
	if !wantJSON(c) {
		fmt.Fprintf(w, "Client:\n  Version:    %s\n  Go version: %s\n\n", v.Client.Version, v.Client.GoVersion)
	}

	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ver, err := versionapi.NewVersionClient(cl.conn).Version(ctx, &emptypb.Empty{})
	if err != nil {
		return cl.fail(err, "get", object{kind: "version"})
	}
	srv, err := introspectionapi.NewIntrospectionClient(cl.conn).Server(ctx, &emptypb.Empty{})
	if err != nil {
		return cl.fail(err, "get", object{kind: "server info"})
	}
	v.Server = &serverView{Version: ver.GetVersion(), Revision: ver.GetRevision(), UUID: srv.GetUUID()}

	if wantJSON(c) {
		return printJSON(w, v)
	}
	_, err = fmt.Fprintf(w, "Server:\n  Version:    %s\n  Revision:   %s\n  UUID:       %s\n",
		v.Server.Version, v.Server.Revision, v.Server.UUID)
	return err
}
