package shim

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/mount"
	task "github.com/containerd/containerd/api/runtime/task/v2"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// deleteAfterDeath is the delete verb: the daemon runs it when a shim's
// connection drops (and, in containerd 1.6, after every Shutdown). It
// force-deletes the runc container, unmounts the rootfs, removes the socket
// and prints a DeleteResponse: the recorded exit of init, or 137 (SIGKILL).
func deleteAfterDeath(ctx context.Context, cfg config, stdout io.Writer) error {
	bundle := cfg.bundle
	o := readBundleOptions(bundle)
	r := newRunc(o, cfg.namespace, bundle)
	if err := r.Delete(ctx, cfg.id, &runc.DeleteOpts{Force: true}); err != nil {
		if !strings.Contains(err.Error(), "does not exist") && !strings.Contains(err.Error(), "not exist") {
			log.G(ctx).WithError(err).Warn("runc delete --force")
		}
	}
	if err := mount.UnmountAll(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		addr := string(b)
		if !canConnect(strings.TrimPrefix(addr, "unix://")) {
			removeSocket(addr)
		}
	}
	pid, _ := readPidFile(filepath.Join(bundle, initPidFile))
	status, at, ok := readInitExit(bundle)
	if !ok {
		status, at = 128+int(unix.SIGKILL), time.Now()
	}
	b, err := proto.Marshal(&task.DeleteResponse{
		Pid:        uint32(pid),
		ExitStatus: uint32(status),
		ExitedAt:   timestamppb.New(at),
	})
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}
