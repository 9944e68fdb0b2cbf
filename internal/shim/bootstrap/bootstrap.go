// Package bootstrap is the hand-over between berthd and berth's own shim
// when berthd launches the shim's server itself instead of running the
// shim's `start` verb (which other shims, and berth's under containerd,
// still use).
//
// berthd creates the task socket (0600 in a 0700 directory), then runs
// `containerd-shim-berth-v2 -address A -publish-binary B serve` with the
// socket's listener on fd 3 and the read end of a pipe on fd 4. The shim
// initialises and waits; later (right away, or when a task is created, for
// a shim started ahead of need) berthd writes one JSON Config to the pipe
// and closes it. The shim then takes the task's identity, changes into its
// bundle and serves. EOF without a Config (berthd stopped or died) makes
// the shim exit without serving.
//
// Invariants: the shim validates Namespace and ID before it builds a path
// from them; nothing but berthd holds the pipe's write end.
package bootstrap

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Verb is the shim subcommand of a launch through this hand-over.
const Verb = "serve"

// The fds a launched shim inherits.
const (
	ListenerFD = 3
	PipeFD     = 4
)

// MaxConfig bounds what the shim reads from the pipe.
const MaxConfig = 1 << 20

// GODEBUG trims the shim server's runtime before its first allocation,
// which only the environment can: no heap profiling (its bucket table and
// records outweigh the shim's live heap) and no cgroup-driven GOMAXPROCS
// (its scratch buffer and open cgroup files; the server runs on one P).
const GODEBUG = "memprofilerate=0,cgroupgomaxprocs=0,updatemaxprocs=0"

// ServerEnv is the environment of a shim server: environ with GODEBUG
// extended and GOMAXPROCS=1, so that the runtime starts on one P (a second
// P's allocation cache, filled during start-up, stays resident: about half
// a MiB of a shim's heap), then extra, whose keys replace those of environ
// (the first of two entries would win). The server drops GOMAXPROCS again
// before it runs anything (runc, logging binaries).
func ServerEnv(environ []string, extra ...string) []string {
	godebug := GODEBUG
	env := make([]string, 0, len(environ)+len(extra)+2)
	set := map[string]bool{"GOMAXPROCS": true}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	for _, kv := range environ {
		switch k, v, _ := strings.Cut(kv, "="); {
		case k == "GODEBUG":
			if v != "" {
				godebug += "," + v
			}
		case !set[k]:
			env = append(env, kv)
		}
	}
	return append(append(env, "GODEBUG="+godebug, "GOMAXPROCS=1"), extra...)
}

// Config is the task a launched shim serves.
type Config struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	Bundle    string `json:"bundle"` // absolute
	Debug     bool   `json:"debug,omitempty"`
	// Options is the runtime options Any of the task (proto-marshalled),
	// what `start` reads on stdin.
	Options []byte `json:"options,omitempty"`
}

// MaxSocketPath is the longest path a sockaddr_un holds (108 bytes with
// the terminating NUL).
const MaxSocketPath = 107

// Listen listens on a task socket: a filesystem unix socket (never an
// abstract one), 0600 in a 0700 directory. The socket file stays when the
// listener is closed.
func Listen(path string) (*net.UnixListener, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, longer than %d", path, len(path), MaxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	return l, nil
}

// AdjustOOMScore makes the shim pid one step more killable than the daemon
// (daemonPid), as containerd does, so that a container's shim dies before
// the daemon that supervises it.
func AdjustOOMScore(pid, daemonPid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", daemonPid))
	if err != nil {
		return err
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	if score < 1000 {
		score++
	}
	return os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(score)), 0)
}
