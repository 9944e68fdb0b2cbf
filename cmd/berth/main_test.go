package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    map[string]string
		wantErr string
	}{
		{args: nil, want: map[string]string{}},
		{args: []string{"a=b", "c=d=e"}, want: map[string]string{"a": "b", "c": "d=e"}},
		{args: []string{"gone="}, want: map[string]string{"gone": ""}},
		{args: []string{"a=1", "a=2"}, want: map[string]string{"a": "2"}},
		{args: []string{"containerd.io/gc.ref.content=sha256:1"}, want: map[string]string{"containerd.io/gc.ref.content": "sha256:1"}},
		{args: []string{"novalue"}, wantErr: `invalid label "novalue": expected KEY=VALUE (KEY= removes the label)`},
		{args: []string{"=v"}, wantErr: `invalid label "=v": expected KEY=VALUE`},
		{args: []string{"--json"}, wantErr: `flag "--json" must come before the arguments`},
	} {
		got, err := parseLabels(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseLabels(%q): error %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseLabels(%q) = %v, %v; want %v", tc.args, got, err, tc.want)
		}
	}
}

func TestLabelPaths(t *testing.T) {
	got := labelPaths(map[string]string{"x": "y", "a": "", "containerd.io/gc.root": "1"})
	want := []string{"labels.a", "labels.containerd.io/gc.root", "labels.x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("labelPaths = %q, want %q", got, want)
	}
}

func TestRequestErrorRendering(t *testing.T) {
	cl := &client{address: "/run/berth/berthd.sock", namespace: "default"}
	notEmpty := when(errdefs.ErrFailedPrecondition, "is not empty: remove its containers and images first")
	for _, tc := range []struct {
		name   string
		err    error
		op     string
		obj    object
		advice []advice
		want   string
	}{
		{
			name: "container not found",
			err:  status.Error(codes.NotFound, `container "x": not found`),
			op:   "get", obj: cl.object("container", "x"),
			want: `container "x" not found in namespace "default" (list containers with: berth -n default containers ls)`,
		},
		{
			name: "the task's shim died, not berthd",
			err:  status.Error(codes.Unavailable, `the task's shim exited before it answered: unavailable`),
			op:   "start", obj: cl.object("task", "t1"),
			want: `cannot start task "t1" in namespace "default": the task's shim exited before it answered (berthd's log, at debug level, has the shim's)`,
		},
		{
			name: "namespace not found",
			err:  status.Error(codes.NotFound, `namespace x: not found`),
			op:   "remove", obj: namespaceObject("x"),
			want: `namespace "x" not found (list namespaces with: berth namespaces ls)`,
		},
		{
			name: "already exists",
			err:  status.Error(codes.AlreadyExists, `container "x": already exists`),
			op:   "create", obj: cl.object("container", "x"),
			want: `container "x" already exists in namespace "default" (choose another name, or remove it first with: berth -n default containers rm x)`,
		},
		{
			name: "namespace not empty, with the daemon's reason",
			err:  status.Error(codes.FailedPrecondition, `namespace "n" must be empty, but it still has containers: failed precondition`),
			op:   "remove", obj: namespaceObject("n"), advice: []advice{notEmpty},
			want: `namespace "n" is not empty: remove its containers and images first (berthd: namespace "n" must be empty, but it still has containers)`,
		},
		{
			name: "advice for another class does not apply",
			err:  status.Error(codes.NotFound, `namespace n: not found`),
			op:   "remove", obj: namespaceObject("n"), advice: []advice{notEmpty},
			want: `namespace "n" not found (list namespaces with: berth namespaces ls)`,
		},
		{
			name: "invalid argument keeps the class once",
			err:  status.Error(codes.InvalidArgument, `identifier "Bad!" must match ^[a-z]+$: invalid argument`),
			op:   "create", obj: namespaceObject("Bad!"),
			want: `cannot create namespace "Bad!": invalid argument: identifier "Bad!" must match ^[a-z]+$`,
		},
		{
			name: "listing",
			err:  status.Error(codes.InvalidArgument, `filters: parse error`),
			op:   "list", obj: cl.object("containers", ""),
			want: `cannot list containers in namespace "default": invalid argument: filters: parse error`,
		},
		{
			name: "bare class",
			err:  status.Error(codes.Internal, `internal`),
			op:   "update", obj: cl.object("container", "c"),
			want: `cannot update container "c" in namespace "default": internal`,
		},
		{
			name: "unimplemented",
			err:  status.Error(codes.Unimplemented, `unknown method ListStream`),
			op:   "list", obj: cl.object("containers", ""),
			want: `berthd at /run/berth/berthd.sock cannot list containers in namespace "default": not implemented (upgrade berthd) (berthd: unknown method ListStream)`,
		},
		{
			name: "unavailable",
			err:  status.Error(codes.Unavailable, `shutting down`),
			op:   "get", obj: cl.object("container", "c"),
			want: `cannot get container "c" in namespace "default": berthd at /run/berth/berthd.sock is unavailable (try again; is it shutting down?) (berthd: shutting down)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cl.fail(tc.err, tc.op, tc.obj, tc.advice...)
			if got := render(err); got != tc.want {
				t.Errorf("got\n  %s\nwant\n  %s", got, tc.want)
			}
		})
	}
	if cl.fail(nil, "get", object{}) != nil {
		t.Error("fail(nil) is not nil")
	}
	if err := cl.fail(status.Error(codes.Canceled, "context canceled"), "get", object{}); err != context.Canceled {
		t.Errorf("a cancelled request is %v, want context.Canceled", err)
	}
	if err := cl.fail(status.Error(codes.NotFound, "x"), "get", object{}); !errdefs.IsNotFound(err) {
		t.Errorf("the class is lost: %v", err)
	}
}

func TestReachError(t *testing.T) {
	const addr = "/run/berth/berthd.sock"
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fs.ErrNotExist, "cannot reach berthd at /run/berth/berthd.sock (no socket there): is it running? (start berthd, or pass --address)"},
		{syscall.ECONNREFUSED, "cannot reach berthd at /run/berth/berthd.sock (connection refused): is it running? (start berthd, or pass --address)"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, "cannot reach berthd at /run/berth/berthd.sock: permission denied (run berth as root, or get write access to the socket)"},
		{syscall.ENOTSOCK, "cannot reach berthd at /run/berth/berthd.sock: not a socket (pass --address with berthd's socket)"},
		{nil, "cannot reach berthd at /run/berth/berthd.sock: is it running? (start berthd, or pass --address)"},
	} {
		if got := (&reachError{address: addr, err: tc.err}).Error(); got != tc.want {
			t.Errorf("%v:\n got  %s\n want %s", tc.err, got, tc.want)
		}
	}
}

// berth runs the command line in-process and returns stdout, stderr and the exit status.
func berth(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"berth"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-a", missing, "containers", "rm"}, 2, "berth: containers rm: expected at least one container ID (usage: berth containers rm ID [ID…])\n"},
		{[]string{"-a", missing, "c", "info"}, 2, "berth: containers info: expected a container ID (usage: berth containers info ID)\n"},
		{[]string{"-a", missing, "c", "info", "a", "b"}, 2, "berth: containers info: expected one container ID, got 2 (usage: berth containers info ID)\n"},
		{[]string{"-a", missing, "ns", "create", "n", "oops"}, 2, `berth: namespaces create: invalid label "oops": expected KEY=VALUE (KEY= removes the label) (usage: berth namespaces create NAME [KEY=VALUE…])` + "\n"},
		{[]string{"-a", missing, "ns", "label"}, 2, "berth: namespaces label: expected a namespace NAME (usage: berth namespaces label NAME [KEY=VALUE…])\n"},
		{[]string{"-a", missing, "ns", "frob"}, 2, "berth: namespaces: unknown command \"frob\" (see: berth namespaces --help)\n"},
		{[]string{"-a", missing, "frob"}, 2, "berth: unknown command \"frob\" (see: berth --help)\n"},
		{[]string{"-a", missing, "ns", "ls", "--bogus"}, 2, "berth: namespaces ls: flag provided but not defined: -bogus (see: berth namespaces ls --help)\n"},
		{[]string{"-a", missing, "-n", "", "ns", "ls"}, 2, "berth: empty namespace: pass --namespace NAME (default default) (see: berth --help)\n"},
		{[]string{"-a", missing, "ns", "ls"}, 1, "berth: cannot reach berthd at " + missing + " (no socket there): is it running? (start berthd, or pass --address)\n"},
		{[]string{"-a", "unix://" + missing, "c", "ls"}, 1, "berth: cannot reach berthd at " + missing + " (no socket there)"},
		{[]string{"-a", file, "version"}, 1, "berth: cannot reach berthd at " + file + ": not a socket"},
	} {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			_, stderr, code := berth(t, tc.args...)
			if code != tc.code || !strings.HasPrefix(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n  %q\nwant exit %d, stderr starting\n  %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestAddressFromEnvironment(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "env.sock")
	t.Setenv("BERTH_ADDRESS", "")
	t.Setenv("CONTAINERD_ADDRESS", missing)
	_, stderr, code := berth(t, "ns", "ls")
	if code != 1 || !strings.Contains(stderr, missing) {
		t.Errorf("CONTAINERD_ADDRESS ignored: exit %d, %s", code, stderr)
	}
	t.Setenv("BERTH_ADDRESS", missing+".berth")
	_, stderr, _ = berth(t, "ns", "ls")
	if !strings.Contains(stderr, missing+".berth") {
		t.Errorf("BERTH_ADDRESS does not win over CONTAINERD_ADDRESS: %s", stderr)
	}
}

// fakeDaemon serves Version and a Containers service without ListStream (as old daemons),
// recording the namespace of each request.
type fakeDaemon struct {
	containersapi.UnimplementedContainersServer
	versionapi.UnimplementedVersionServer
	namespaces chan string
}

func (f *fakeDaemon) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	select {
	case f.namespaces <- strings.Join(md.Get(namespaceHeader), ","):
	default:
	}
}

func (f *fakeDaemon) List(ctx context.Context, req *containersapi.ListContainersRequest) (*containersapi.ListContainersResponse, error) {
	f.record(ctx)
	if len(req.GetFilters()) > 0 {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("filters %q: invalid argument", req.GetFilters()))
	}
	return &containersapi.ListContainersResponse{Containers: []*containersapi.Container{
		{ID: "c1", Image: "img", Runtime: &containersapi.Container_Runtime{Name: "io.containerd.runc.v2"}},
		{ID: "c2"},
	}}, nil
}

func (f *fakeDaemon) Version(ctx context.Context, _ *emptypb.Empty) (*versionapi.VersionResponse, error) {
	f.record(ctx)
	return &versionapi.VersionResponse{Version: "9.9", Revision: "r"}, nil
}

func startFake(t *testing.T) (string, *fakeDaemon) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{namespaces: make(chan string, 16)}
	s := grpc.NewServer()
	containersapi.RegisterContainersServer(s, f)
	versionapi.RegisterVersionServer(s, f)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return sock, f
}

func TestContainersListFallsBackToList(t *testing.T) {
	sock, f := startFake(t)
	out, stderr, code := berth(t, "-a", sock, "-n", "k8s.io", "containers", "ls")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "CONTAINER   IMAGE   RUNTIME\nc1          img     io.containerd.runc.v2\nc2          -       -\n"
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if ns := <-f.namespaces; ns != "k8s.io" {
		t.Errorf("namespace header %q, want k8s.io", ns)
	}

	for _, args := range [][]string{{"--json", "c", "ls"}, {"c", "ls", "--json"}} {
		out, stderr, code = berth(t, append([]string{"-a", sock}, args...)...)
		var got []containerView
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
			t.Fatalf("%q: exit %d, %v: %s%s", args, code, err, out, stderr)
		}
		if len(got) != 2 || got[0].ID != "c1" || got[0].Runtime.Name != "io.containerd.runc.v2" || got[1].ID != "c2" {
			t.Errorf("%q: got %+v", args, got)
		}
	}

	out, _, _ = berth(t, "-a", sock, "c", "ls", "-q")
	if out != "c1\nc2\n" {
		t.Errorf("-q: got %q", out)
	}
	_, stderr, code = berth(t, "-a", sock, "c", "ls", "image==x")
	if code != 1 || !strings.Contains(stderr, `berth: cannot list containers in namespace "default": invalid argument: filters ["image==x"]`) {
		t.Errorf("filters: exit %d, %s", code, stderr)
	}
}

func TestVersionReportsMissingIntrospection(t *testing.T) {
	sock, _ := startFake(t)
	out, stderr, code := berth(t, "-a", sock, "version")
	if code != 1 || !strings.HasPrefix(out, "Client:\n  Version:") ||
		!strings.Contains(stderr, "cannot get server info: not implemented (upgrade berthd)") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
