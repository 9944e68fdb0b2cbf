package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := Load(filepath.Join(dir, "missing.toml"), false)
	if err != nil || c.GRPC.Address != DefaultAddress || c.TTRPCAddress() != DefaultAddress+".ttrpc" {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Fatal("a required missing config must fail")
	}
	p := write(`version = 2
root = "/r"
[grpc]
address = "/s/sock"
[plugins."io.containerd.gc.v1.scheduler"]
pause_threshold = 0.5
`)
	c, err = Load(p, true)
	if err != nil || c.Root != "/r" || c.State != DefaultState || c.GRPC.MaxRecvMsgSize != DefaultMaxMsgSize {
		t.Fatalf("load: %v %+v", err, c)
	}
	var sc struct {
		PauseThreshold float64 `toml:"pause_threshold"`
		Other          int     `toml:"other"`
	}
	sc.Other = 7
	if err := c.Decode("io.containerd.gc.v1.scheduler", &sc); err != nil || sc.PauseThreshold != 0.5 || sc.Other != 7 {
		t.Fatalf("decode: %v %+v", err, sc)
	}
	for _, bad := range []string{"version = 2\nbogus = 1\n", "version = 1\n", "version = 2\n[grpc\n"} {
		if _, err := Load(write(bad), true); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want InvalidArgument", bad, err)
		}
	}
	var strict struct{ A int }
	c, _ = Load(write("version = 2\n[plugins.\"x.y\"]\nb = 1\n"), true)
	if err := c.Decode("x.y", &strict); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown plugin key: %v", err)
	}
}
