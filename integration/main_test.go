// Package integration drives a real berthd, started on temporary
// directories, with Debian's ctr, our berth CLI and gRPC clients.
package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	"google.golang.org/protobuf/types/known/anypb"
)

const specURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// TestMain removes the binaries and the busybox archive the tests built
// once they are done.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	if busyboxTar != "" {
		os.RemoveAll(filepath.Dir(busyboxTar))
	}
	os.Exit(code)
}

func nsCtx(t *testing.T, ns string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return testutil.WithNamespace(ctx, ns)
}

func newContainer(id string, labels map[string]string) *containers.Container {
	return &containers.Container{
		ID:      id,
		Labels:  labels,
		Image:   "docker.io/library/busybox:latest",
		Runtime: &containers.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec:    &anypb.Any{TypeUrl: specURL, Value: []byte(`{"ociVersion":"1.1.0","process":{"args":["sh"]}}`)},
	}
}

func createContainer(t *testing.T, conn *grpc.ClientConn, ns, id string, labels map[string]string) {
	t.Helper()
	_, err := containers.NewContainersClient(conn).Create(nsCtx(t, ns), &containers.CreateContainerRequest{Container: newContainer(id, labels)})
	if err != nil {
		t.Fatalf("create container %s: %v", id, err)
	}
}

// native converts a gRPC error back to its errdefs class.
func native(err error) error { return errgrpc.ToNative(err) }

func wantClass(t *testing.T, what string, err error, is func(error) bool, class string) {
	t.Helper()
	if err == nil || !is(native(err)) {
		t.Errorf("%s: got %v, want %s", what, err, class)
	}
}

func mustContain(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

var _ = errdefs.IsNotFound
