package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/shim/bootstrap"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// socketPath is the task socket of (address, ns, id): the sha256 of
// filepath.Join(address, ns, id), the name containerd's shims use, in
// <state>/s, or in /run/berth/s when that path would not fit a sockaddr_un.
func socketPath(address, ns, id, bundle string) string {
	sum := sha256.Sum256([]byte(filepath.Join(address, ns, id)))
	name := hex.EncodeToString(sum[:])
	p := filepath.Join(stateDir(bundle), "s", name)
	if len(p) > bootstrap.MaxSocketPath {
		p = filepath.Join(fallbackState, "s", name)
	}
	return p
}

// start is the start verb: make the socket, launch the server, publish the
// address. Running it again for a live shim returns the same address.
func start(ctx context.Context, cfg config, stdin io.Reader, stdout io.Writer) error {
	raw, err := readLimited(stdin, 1<<20)
	if err != nil {
		return fmt.Errorf("read options: %w", err)
	}
	var shimCgroup string
	if len(raw) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("decode options on stdin: %w", err)
		}
		opts, err := parseOptions(&a)
		if err != nil {
			return err
		}
		shimCgroup = opts.ShimCgroup
	}

	path := socketPath(cfg.address, cfg.namespace, cfg.id, cfg.bundle)
	address := "unix://" + path
	l, err := bootstrap.Listen(path)
	if err != nil {
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		if canConnect(path) {
			// a server already answers for this id: reuse it.
			if err := writeFileAtomic(filepath.Join(cfg.bundle, "address"), []byte(address), 0o600); err != nil {
				return err
			}
			_, err = io.WriteString(stdout, address)
			return err
		}
		_ = os.Remove(path)
		if l, err = bootstrap.Listen(path); err != nil {
			return err
		}
	}
	lf, err := l.File()
	l.Close()
	if err != nil {
		os.Remove(path)
		return err
	}
	defer lf.Close()

	self, err := os.Executable()
	if err != nil {
		os.Remove(path)
		return err
	}
	args := []string{"-namespace", cfg.namespace, "-id", cfg.id, "-address", cfg.address}
	if cfg.publishBinary != "" {
		args = append(args, "-publish-binary", cfg.publishBinary)
	}
	if cfg.debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cfg.bundle
	cmd.Env = bootstrap.ServerEnv(os.Environ())
	cmd.ExtraFiles = []*os.File{lf}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(path)
		return fmt.Errorf("launch shim server: %w", err)
	}
	fail := func(err error) error {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		os.Remove(path)
		return err
	}
	if shimCgroup != "" {
		if err := joinCgroup(shimCgroup, cmd.Process.Pid); err != nil {
			return fail(fmt.Errorf("move shim to cgroup %s: %w", shimCgroup, err))
		}
	}
	if err := bootstrap.AdjustOOMScore(cmd.Process.Pid, os.Getppid()); err != nil {
		log.G(ctx).WithError(err).Debug("adjust oom score of the shim")
	}
	if err := writeFileAtomic(filepath.Join(cfg.bundle, "address"), []byte(address), 0o600); err != nil {
		return fail(err)
	}
	_ = cmd.Process.Release()
	_, err = io.WriteString(stdout, address)
	return err
}

func canConnect(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeSocket removes the socket named by an address, if it is ours.
func removeSocket(address string) {
	p := strings.TrimPrefix(address, "unix://")
	if filepath.Base(filepath.Dir(p)) != "s" {
		return
	}
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(p)
	}
}
