// Package config is berthd's TOML configuration: built-in defaults that serve
// with no file at all, overridden by the file, overridden by flags.
//
// Per-plugin sections live under [plugins."<type>.<id>"] and are decoded into
// the plugin's own config struct by Decode; unknown keys are errors, so a
// typo in a config file is reported instead of silently ignored.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
)

// Defaults fixed by the design brief.
const (
	DefaultConfigPath = "/etc/berth/config.toml"
	DefaultAddress    = "/run/berth/berthd.sock"
	DefaultRoot       = "/var/lib/berth"
	DefaultState      = "/run/berth"
	// DefaultMaxMsgSize bounds gRPC and ttrpc messages both ways (as containerd).
	DefaultMaxMsgSize = 16 << 20
)

// Config is the daemon configuration.
type Config struct {
	Version         int            `toml:"version"`
	Root            string         `toml:"root"`
	State           string         `toml:"state"`
	GRPC            GRPC           `toml:"grpc"`
	TTRPC           TTRPC          `toml:"ttrpc"`
	Debug           Debug          `toml:"debug"`
	DisabledPlugins []string       `toml:"disabled_plugins"`
	Plugins         map[string]any `toml:"plugins"`
}

// GRPC configures the main socket.
type GRPC struct {
	Address        string `toml:"address"`
	UID            int    `toml:"uid"`
	GID            int    `toml:"gid"`
	MaxRecvMsgSize int    `toml:"max_recv_message_size"`
	MaxSendMsgSize int    `toml:"max_send_message_size"`
}

// TTRPC configures the ttrpc socket; empty address means <grpc address>.ttrpc.
type TTRPC struct {
	Address string `toml:"address"`
}

// Debug holds logging settings.
type Debug struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Default returns the built-in configuration.
func Default() *Config {
	return &Config{
		Version: 2,
		Root:    DefaultRoot,
		State:   DefaultState,
		GRPC:    GRPC{Address: DefaultAddress, MaxRecvMsgSize: DefaultMaxMsgSize, MaxSendMsgSize: DefaultMaxMsgSize},
		Debug:   Debug{Level: "info", Format: "text"},
	}
}

// Load reads path over the defaults. A missing file is fine unless required
// (the user named it explicitly).
func Load(path string, required bool) (*Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return c, nil
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("config %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if c.Version != 2 && c.Version != 3 {
		return nil, fmt.Errorf("config %s: version %d is not supported (use version = 2): %w", path, c.Version, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// TTRPCAddress is the ttrpc socket path.
func (c *Config) TTRPCAddress() string {
	if c.TTRPC.Address != "" {
		return c.TTRPC.Address
	}
	return c.GRPC.Address + ".ttrpc"
}

// Disabled returns the set of disabled plugin URIs.
func (c *Config) Disabled() map[string]bool {
	m := map[string]bool{}
	for _, d := range c.DisabledPlugins {
		m[d] = true
	}
	return m
}

// Decode fills into (a pointer to a plugin's default config) from the
// section [plugins."<uri>"], if present.
func (c *Config) Decode(uri string, into any) error {
	section, ok := c.Plugins[uri]
	if !ok {
		return nil
	}
	b, err := toml.Marshal(section)
	if err != nil {
		return err
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("section [plugins.%q]: %v: %w", uri, err, errdefs.ErrInvalidArgument)
	}
	return nil
}
