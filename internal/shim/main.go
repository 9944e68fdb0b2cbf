package shim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/shim/bootstrap"
	"github.com/containerd/log"
)

// config is what containerd passes on the command line and in the
// environment.
type config struct {
	namespace     string
	address       string // the daemon's gRPC socket path (no scheme)
	ttrpcAddress  string // where events go
	publishBinary string
	id            string
	bundle        string
	debug         bool
}

// Run is the whole shim. It returns the process exit code.
func Run(args []string) int {
	var (
		cfg     config
		version bool
		socket  string
	)
	fs := flag.NewFlagSet("containerd-shim-berth-v2", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.StringVar(&cfg.namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&cfg.address, "address", "", "gRPC address of the daemon")
	fs.StringVar(&cfg.publishBinary, "publish-binary", "", "daemon binary (legacy event publishing; unused)")
	fs.StringVar(&cfg.id, "id", "", "id of the task")
	fs.StringVar(&cfg.bundle, "bundle", "", "bundle directory (delete)")
	fs.BoolVar(&cfg.debug, "debug", false, "debug logging")
	fs.BoolVar(&version, "v", false, "print the version and exit")
	fs.StringVar(&socket, "socket", "", "ignored: the task socket is handed down as fd 3")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if version {
		fmt.Printf("containerd-shim-berth-v2\n  Runtime: io.containerd.berth.v2 (runc via go-runc)\n  TTRPC API versions: containerd.task.v2.Task, containerd.task.v3.Task\n")
		return 0
	}
	if cfg.namespace == "" {
		cfg.namespace = os.Getenv("NAMESPACE")
	}
	if cfg.address == "" {
		cfg.address = strings.TrimPrefix(os.Getenv("GRPC_ADDRESS"), "unix://")
	}
	cfg.ttrpcAddress = strings.TrimPrefix(os.Getenv("TTRPC_ADDRESS"), "unix://")
	if cfg.ttrpcAddress == "" && cfg.address != "" {
		cfg.ttrpcAddress = cfg.address + ".ttrpc"
	}
	if cfg.bundle == "" {
		cfg.bundle, _ = os.Getwd()
	}

	verb := fs.Arg(0)
	if verb == bootstrap.Verb {
		// the identity arrives on the bootstrap pipe and is validated there.
		if err := serveLaunched(cfg); err != nil && !errors.Is(err, errNotClaimed) {
			fmt.Fprintf(os.Stderr, "containerd-shim-berth-v2 %s: %v\n", verb, err)
			return 1
		}
		return 0
	}
	if err := validateIDs(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-shim-berth-v2: %v\n", err)
		return 1
	}
	ctx := withIDs(cfg)
	var err error
	switch verb {
	case "start":
		err = start(ctx, cfg, os.Stdin, os.Stdout)
	case "delete":
		err = deleteAfterDeath(ctx, cfg, os.Stdout)
	case "":
		err = serve(ctx, cfg)
	default:
		err = fmt.Errorf("unknown command %q (want start, delete or none)", verb)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "containerd-shim-berth-v2 %s: %v\n", verb, err)
		return 1
	}
	return 0
}

func withIDs(cfg config) context.Context {
	return log.WithLogger(context.Background(), log.L.WithField("namespace", cfg.namespace).WithField("id", cfg.id))
}

func validateIDs(cfg config) error {
	if err := identifiers.Validate(cfg.namespace); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	if err := identifiers.Validate(cfg.id); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	return nil
}

// readLimited reads at most n bytes of r.
func readLimited(r io.Reader, n int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, n))
}
