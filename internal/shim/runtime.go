package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	runtimeDirName  = "io.containerd.runtime.v2.task"
	optionsFile     = "options.json"
	initPidFile     = "init.pid"
	initExitFile    = "init.exit"
	runcLogFile     = "log.json"
	fallbackState   = "/run/berth"
	runcOptionsType = "containerd.runc.v1.Options"
)

// stateDir is the daemon's state directory implied by a bundle at
// <state>/io.containerd.runtime.v2.task/<ns>/<id>, or /run/berth when the
// bundle lies elsewhere.
func stateDir(bundle string) string {
	nsDir := filepath.Dir(filepath.Clean(bundle))
	rtDir := filepath.Dir(nsDir)
	if filepath.Base(rtDir) == runtimeDirName {
		return filepath.Dir(rtDir)
	}
	return fallbackState
}

// parseOptions decodes the runc options Any of a Create request or of
// start's stdin. Empty input means defaults.
func parseOptions(a *anypb.Any) (*options.Options, error) {
	opts := &options.Options{}
	if a == nil || a.GetTypeUrl() == "" {
		return opts, nil
	}
	name := a.GetTypeUrl()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if name != runcOptionsType {
		return nil, fmt.Errorf("task options of type %q (want %s): %w", a.GetTypeUrl(), runcOptionsType, errdefs.ErrInvalidArgument)
	}
	if err := proto.Unmarshal(a.GetValue(), opts); err != nil {
		return nil, fmt.Errorf("decode %s: %v: %w", runcOptionsType, err, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

// bundleOptions is what the bundle remembers of the options, so that delete
// can find runc after the server is gone.
type bundleOptions struct {
	BinaryName    string `json:"binary_name,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	NoPivotRoot   bool   `json:"no_pivot_root,omitempty"`
	NoNewKeyring  bool   `json:"no_new_keyring,omitempty"`
	IoUID         uint32 `json:"io_uid,omitempty"`
	IoGID         uint32 `json:"io_gid,omitempty"`
	CriuImagePath string `json:"criu_image_path,omitempty"`
	CriuWorkPath  string `json:"criu_work_path,omitempty"`
}

func toBundleOptions(o *options.Options) bundleOptions {
	return bundleOptions{
		BinaryName: o.BinaryName, Root: o.Root, SystemdCgroup: o.SystemdCgroup,
		NoPivotRoot: o.NoPivotRoot, NoNewKeyring: o.NoNewKeyring,
		IoUID: o.IoUid, IoGID: o.IoGid,
		CriuImagePath: o.CriuImagePath, CriuWorkPath: o.CriuWorkPath,
	}
}

func writeBundleOptions(bundle string, o bundleOptions) error {
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(bundle, optionsFile), b, 0o600)
}

func readBundleOptions(bundle string) bundleOptions {
	var o bundleOptions
	if b, err := os.ReadFile(filepath.Join(bundle, optionsFile)); err == nil {
		_ = json.Unmarshal(b, &o)
	}
	return o
}

// newRunc returns the go-runc client for a task of namespace ns in bundle.
// No parent-death signal: it would pin an OS thread per runc call (the
// signal follows the forking thread), and a runc orphaned by a dying shim
// is cleaned up by the delete verb anyway.
func newRunc(o bundleOptions, ns, bundle string) *runc.Runc {
	root := o.Root
	if root == "" {
		root = filepath.Join(stateDir(bundle), "runc")
	}
	return &runc.Runc{
		Command:       o.BinaryName, // "" means runc
		Log:           filepath.Join(bundle, runcLogFile),
		LogFormat:     runc.JSON,
		Root:          filepath.Join(root, ns),
		SystemdCgroup: o.SystemdCgroup,
	}
}

// runtimeError names the failed runc verb and adds the last error runc
// logged, which is more useful than its exit status.
func runtimeError(bundle string, err error, what string) error {
	if err == nil {
		return nil
	}
	msg := lastRuntimeError(filepath.Join(bundle, runcLogFile))
	if msg == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %s: %w", what, msg, err)
}

// checkKillError classifies a failed kill the way containerd does: a
// process or container that is gone is NotFound.
func checkKillError(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, unix.ESRCH), strings.Contains(msg, "process already finished"),
		strings.Contains(msg, "container not running"), strings.Contains(msg, "no such process"):
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case strings.Contains(msg, "does not exist"):
		return fmt.Errorf("no such container: %w", errdefs.ErrNotFound)
	}
	return fmt.Errorf("unknown error after kill: %w", err)
}

func lastRuntimeError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return last
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, b)
	}
	return pid, nil
}

// writeInitExit records init's exit in the bundle for delete after a crash.
func writeInitExit(bundle string, status int, at time.Time) {
	_ = writeFileAtomic(filepath.Join(bundle, initExitFile), []byte(fmt.Sprintf("%d %d", status, at.UnixNano())), 0o600)
}

func readInitExit(bundle string) (int, time.Time, bool) {
	b, err := os.ReadFile(filepath.Join(bundle, initExitFile))
	if err != nil {
		return 0, time.Time{}, false
	}
	var status int
	var nanos int64
	if _, err := fmt.Sscanf(string(b), "%d %d", &status, &nanos); err != nil {
		return 0, time.Time{}, false
	}
	return status, time.Unix(0, nanos), true
}

// writeFileAtomic writes a dot-file beside path and renames it into place.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

var errShimClosed = errors.New("shim is shutting down")
