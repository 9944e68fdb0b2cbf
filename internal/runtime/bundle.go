package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

type bundle struct {
	ns, id string
	path   string // <state>/<ns>/<id>
	work   string // <root>/<ns>/<id>
}

func (m *Manager) existingBundle(ns, id string) *bundle {
	return &bundle{ns: ns, id: id, path: filepath.Join(m.state, ns, id), work: filepath.Join(m.root, ns, id)}
}

// newBundle creates the bundle of a task; AlreadyExists if one is there.
// ns and id are validated identifiers.
func (m *Manager) newBundle(ns, id string, spec []byte) (*bundle, error) {
	b := m.existingBundle(ns, id)
	for _, d := range []string{filepath.Dir(b.path), filepath.Dir(b.work)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(b.path, 0o700); err != nil {
		if os.IsExist(err) {
			return nil, fmt.Errorf("bundle of task %q in namespace %q exists: %w", id, ns, errdefs.ErrAlreadyExists)
		}
		return nil, err
	}
	var err error
	if gid := userNamespaceRoot(spec); gid >= 0 {
		if err = os.Chown(b.path, -1, gid); err == nil {
			err = os.Chmod(b.path, 0o710)
		}
	}
	if err == nil {
		err = os.MkdirAll(b.work, 0o711)
	}
	if err == nil {
		err = os.Symlink(b.work, filepath.Join(b.path, "work"))
	}
	if err == nil {
		err = os.Mkdir(filepath.Join(b.path, "rootfs"), 0o711)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(b.path, "config.json"), spec, 0o600)
	}
	if err != nil {
		_ = b.remove()
		return nil, err
	}
	return b, nil
}

// userNamespaceRoot returns the host group of the root of a spec's user
// namespace, or -1. A bundle is for root alone (0700: a traversable bundle
// let host users reach setuid binaries in a rootfs, containerd's
// CVE-2021-41103), except that with a user namespace runc's init, already
// in it, must reach the rootfs: then the bundle is 0710 with that group,
// as containerd does.
func userNamespaceRoot(spec []byte) int {
	var s struct {
		Linux *struct {
			GIDMappings []specs.LinuxIDMapping `json:"gidMappings"`
		} `json:"linux"`
	}
	if json.Unmarshal(spec, &s) != nil || s.Linux == nil {
		return -1
	}
	for _, m := range s.Linux.GIDMappings {
		if m.ContainerID == 0 {
			return int(m.HostID)
		}
	}
	return -1
}

// remove deletes the bundle and work directory; a rootfs still mounted (the
// shim died before unmounting it) is detached first, so nothing below it is
// ever deleted through the mount.
func (b *bundle) remove() error {
	rootfs := filepath.Join(b.path, "rootfs")
	for i := 0; i < 16; i++ {
		if err := unix.Unmount(rootfs, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			break
		}
	}
	if err := os.Remove(rootfs); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("rootfs of %s/%s is not empty after unmount; leaving the bundle: %w", b.ns, b.id, err)
	}
	if err := os.RemoveAll(b.path); err != nil {
		return err
	}
	return os.RemoveAll(b.work)
}

// killLeftover kills the container's init if it outlived its shim's
// delete, so that a dead shim never leaves a container running unseen.
func killLeftover(ctx context.Context, b *bundle) {
	raw, err := os.ReadFile(filepath.Join(b.path, "init.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return
	}
	if unix.Kill(pid, 0) == nil {
		log.G(ctx).WithField("id", b.id).WithField("pid", pid).Warn("container outlived its shim's delete; killing it")
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// removeOrphanWorkDirs removes work directories whose bundle is gone.
func (m *Manager) removeOrphanWorkDirs(ctx context.Context) {
	nsDirs, _ := os.ReadDir(m.root)
	for _, nd := range nsDirs {
		ids, _ := os.ReadDir(filepath.Join(m.root, nd.Name()))
		for _, d := range ids {
			if _, err := os.Stat(filepath.Join(m.state, nd.Name(), d.Name())); os.IsNotExist(err) {
				log.G(ctx).WithField("id", d.Name()).Debug("removing orphan work dir")
				_ = os.RemoveAll(filepath.Join(m.root, nd.Name(), d.Name()))
			}
		}
	}
}
