package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/berth-dev/berth/internal/testutil"
)

// cliOK runs berth against d and fails the test unless it succeeds.
func cliOK(t *testing.T, d *testutil.Daemon, args ...string) string {
	t.Helper()
	out, err := d.Berth(args...)
	if err != nil {
		t.Fatalf("berth %q: %v", args, err)
	}
	return out
}

// cliFails runs berth against d, wants exit status code, and returns the output.
func cliFails(t *testing.T, d *testutil.Daemon, code int, args ...string) string {
	t.Helper()
	out, err := d.Berth(args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != code {
		t.Fatalf("berth %q: want exit status %d, got %v\n%s", args, code, err, out)
	}
	return out
}

// cliWantOutput fails unless out is exactly want.
func cliWantOutput(t *testing.T, what, out, want string) {
	t.Helper()
	if out != want {
		t.Errorf("%s: got\n%s\nwant\n%s", what, out, want)
	}
}

// cliTable splits a table into the header's columns and rows of cells.
func cliTable(t *testing.T, out string) ([]string, [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	split := regexp.MustCompile(`\s{2,}`)
	header := split.Split(lines[0], -1)
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, split.Split(l, -1))
	}
	return header, rows
}

const cliSpecURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// cliCreateContainer creates a container record through the API, as ctr would after an unpack.
func cliCreateContainer(t *testing.T, d *testutil.Daemon, ns, id string, labels map[string]string) {
	t.Helper()
	ctx := testutil.WithNamespace(context.Background(), ns)
	_, err := containersapi.NewContainersClient(d.Conn(t)).Create(ctx, &containersapi.CreateContainerRequest{
		Container: &containersapi.Container{
			ID:      id,
			Image:   "docker.io/library/busybox:latest",
			Labels:  labels,
			Runtime: &containersapi.Container_Runtime{Name: "io.containerd.runc.v2"},
			Spec: &anypb.Any{TypeUrl: cliSpecURL,
				Value: []byte(`{"ociVersion":"1.1.0","process":{"args":["sh","-c","true"],"cwd":"/"},"root":{"path":"rootfs"}}`)},
			Snapshotter: "overlayfs",
			SnapshotKey: id,
		},
	})
	if err != nil {
		t.Fatalf("create container %s/%s: %v", ns, id, err)
	}
}

func cliGetContainer(t *testing.T, d *testutil.Daemon, ns, id string) (*containersapi.Container, error) {
	t.Helper()
	ctx := testutil.WithNamespace(context.Background(), ns)
	resp, err := containersapi.NewContainersClient(d.Conn(t)).Get(ctx, &containersapi.GetContainerRequest{ID: id})
	return resp.GetContainer(), err
}

func TestCLIVersion(t *testing.T) {
	d := testutil.StartDaemon(t)
	ctx := testutil.WithNamespace(context.Background(), "default")
	ver, err := versionapi.NewVersionClient(d.Conn(t)).Version(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := introspectionapi.NewIntrospectionClient(d.Conn(t)).Server(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.GetUUID() == "" {
		t.Error("Introspection.Server returned no uuid")
	}

	out := cliOK(t, d, "version")
	for _, want := range []string{
		"Client:\n  Version:    ",
		"\nServer:\n  Version:    " + ver.GetVersion() + "\n",
		"\n  Revision:   " + ver.GetRevision() + "\n",
		"\n  UUID:       " + srv.GetUUID() + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}

	var v struct {
		Client struct{ Version, GoVersion string }
		Server struct{ Version, Revision, UUID string }
	}
	out = cliOK(t, d, "--json", "version")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	if v.Client.Version == "" || v.Server.Version != ver.GetVersion() || v.Server.UUID != srv.GetUUID() {
		t.Errorf("version --json: got %+v", v)
	}
}

func TestCLIPlugins(t *testing.T) {
	d := testutil.StartDaemon(t)
	ctx := testutil.WithNamespace(context.Background(), "default")
	api := introspectionapi.NewIntrospectionClient(d.Conn(t))
	all, err := api.Plugins(ctx, &introspectionapi.PluginsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetPlugins()) == 0 {
		t.Fatal("berthd lists no plugins")
	}
	statusOf := func(p *introspectionapi.Plugin) string {
		if p.GetInitErr() == nil {
			return "ok"
		}
		if strings.Contains(p.GetInitErr().GetMessage(), "skip plugin") {
			return "skip"
		}
		return "error"
	}

	header, rows := cliTable(t, cliOK(t, d, "plugins", "ls"))
	if !reflect.DeepEqual(header, []string{"TYPE", "ID", "PLATFORMS", "STATUS"}) {
		t.Errorf("plugins ls header: %q", header)
	}
	if len(rows) != len(all.GetPlugins()) {
		t.Fatalf("plugins ls: %d rows, the API lists %d plugins", len(rows), len(all.GetPlugins()))
	}
	for i, p := range all.GetPlugins() {
		if len(rows[i]) != 4 || rows[i][0] != p.GetType() || rows[i][1] != p.GetID() || rows[i][3] != statusOf(p) {
			t.Errorf("plugins ls row %d: %q, want %s %s … %s", i, rows[i], p.GetType(), p.GetID(), statusOf(p))
		}
	}

	var views []struct {
		Type, ID, Status string
		Error            *struct{ Code, Message string }
	}
	out := cliOK(t, d, "plugins", "ls", "--json")
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("plugins ls --json: %v\n%s", err, out)
	}
	if len(views) != len(all.GetPlugins()) {
		t.Fatalf("plugins ls --json: %d plugins, want %d", len(views), len(all.GetPlugins()))
	}
	for i, p := range all.GetPlugins() {
		v := views[i]
		if v.Type != p.GetType() || v.ID != p.GetID() || v.Status != statusOf(p) ||
			(p.GetInitErr() != nil) != (v.Error != nil) ||
			(v.Error != nil && v.Error.Message != p.GetInitErr().GetMessage()) {
			t.Errorf("plugins ls --json [%d] = %+v, want %s.%s", i, v, p.GetType(), p.GetID())
		}
	}

	// Filters go to the daemon.
	const grpcType = "io.containerd.grpc.v1"
	filtered, err := api.Plugins(ctx, &introspectionapi.PluginsRequest{Filters: []string{"type==" + grpcType}})
	if err != nil {
		t.Fatal(err)
	}
	if len(filtered.GetPlugins()) == 0 || len(filtered.GetPlugins()) == len(all.GetPlugins()) {
		t.Fatalf("the filter type==%s selects %d of %d plugins", grpcType, len(filtered.GetPlugins()), len(all.GetPlugins()))
	}
	_, rows = cliTable(t, cliOK(t, d, "plugins", "ls", "type=="+grpcType))
	if len(rows) != len(filtered.GetPlugins()) {
		t.Errorf("plugins ls type==%s: %d rows, want %d", grpcType, len(rows), len(filtered.GetPlugins()))
	}
	for _, r := range rows {
		if r[0] != grpcType {
			t.Errorf("plugins ls type==%s printed %q", grpcType, r)
		}
	}

	out = cliOK(t, d, "plugins", "ls", "--detailed", "type=="+grpcType)
	for _, p := range filtered.GetPlugins() {
		if !regexp.MustCompile(`(?m)^Type:\s+` + regexp.QuoteMeta(p.GetType()) + `\nID:\s+` + regexp.QuoteMeta(p.GetID()) + `\nStatus:\s+` + statusOf(p) + `$`).MatchString(out) {
			t.Errorf("plugins ls --detailed lacks %s.%s:\n%s", p.GetType(), p.GetID(), out)
		}
	}
	if n := strings.Count(out, "Type:"); n != len(filtered.GetPlugins()) {
		t.Errorf("plugins ls --detailed: %d plugins, want %d", n, len(filtered.GetPlugins()))
	}
	out = cliFails(t, d, 1, "plugins", "ls", "!!")
	if !strings.Contains(out, "berth: cannot list plugins: invalid argument") {
		t.Errorf("a bad filter: %s", out)
	}
}

func TestCLINamespaces(t *testing.T) {
	d := testutil.StartDaemon(t)
	api := namespacesapi.NewNamespacesClient(d.Conn(t))
	bg := context.Background()

	cliOK(t, d, "namespaces", "create", "team-a", "owner=alice", "tier=dev")
	cliOK(t, d, "ns", "create", "team-b")
	resp, err := api.Get(bg, &namespacesapi.GetNamespaceRequest{Name: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"owner": "alice", "tier": "dev"}; !reflect.DeepEqual(resp.GetNamespace().GetLabels(), want) {
		t.Errorf("created labels %v, want %v", resp.GetNamespace().GetLabels(), want)
	}

	header, rows := cliTable(t, cliOK(t, d, "namespace", "ls"))
	if !reflect.DeepEqual(header, []string{"NAME", "LABELS"}) {
		t.Errorf("namespaces ls header: %q", header)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r[0]] = r[1]
	}
	if got["team-a"] != "owner=alice,tier=dev" || got["team-b"] != "-" {
		t.Errorf("namespaces ls rows: %q", rows)
	}
	cliWantOutput(t, "ns ls -q", cliOK(t, d, "ns", "ls", "-q"), strings.Join(cliFirstColumn(rows), "\n")+"\n")

	// label sets and, with KEY=, removes; the Update uses one labels.KEY path each.
	cliOK(t, d, "ns", "label", "team-a", "tier=", "cost=42")
	resp, err = api.Get(bg, &namespacesapi.GetNamespaceRequest{Name: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"owner": "alice", "cost": "42"}; !reflect.DeepEqual(resp.GetNamespace().GetLabels(), want) {
		t.Errorf("labels after label: %v, want %v", resp.GetNamespace().GetLabels(), want)
	}
	cliWantOutput(t, "ns label NAME", cliOK(t, d, "ns", "label", "team-a"), "cost=42\nowner=alice\n")

	var views []struct {
		Name   string
		Labels map[string]string
	}
	out := cliOK(t, d, "--json", "ns", "ls")
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("ns ls --json: %v\n%s", err, out)
	}
	found := false
	for _, v := range views {
		if v.Name == "team-a" {
			found = reflect.DeepEqual(v.Labels, map[string]string{"owner": "alice", "cost": "42"})
		}
	}
	if !found {
		t.Errorf("ns ls --json lacks team-a with its labels: %s", out)
	}

	// Errors name the object and say what to do.
	out = cliFails(t, d, 1, "ns", "create", "team-a")
	cliWantOutput(t, "create twice", out,
		"berth: namespace \"team-a\" already exists (choose another name, or remove it first with: berth namespaces rm team-a)\n")
	out = cliFails(t, d, 1, "ns", "create", "Bad!")
	if !strings.HasPrefix(out, `berth: cannot create namespace "Bad!": invalid argument`) {
		t.Errorf("invalid name: %s", out)
	}
	out = cliFails(t, d, 1, "ns", "rm", "nope")
	cliWantOutput(t, "rm missing", out, "berth: namespace \"nope\" not found (list namespaces with: berth namespaces ls)\n")

	cliCreateContainer(t, d, "team-a", "c1", nil)
	out = cliFails(t, d, 1, "ns", "rm", "team-a")
	if !strings.HasPrefix(out, `berth: namespace "team-a" is not empty: remove its containers and images first`) {
		t.Errorf("rm non-empty: %s", out)
	}
	if _, err := api.Get(bg, &namespacesapi.GetNamespaceRequest{Name: "team-a"}); err != nil {
		t.Errorf("a non-empty namespace went away: %v", err)
	}

	// Several names: the good ones go, the bad ones are reported, the status is 1.
	out = cliFails(t, d, 1, "ns", "rm", "team-b", "nope", "team-a")
	if !strings.Contains(out, `namespace "nope" not found`) || !strings.Contains(out, `namespace "team-a" is not empty`) {
		t.Errorf("rm of several: %s", out)
	}
	_, rows = cliTable(t, cliOK(t, d, "ns", "ls"))
	for _, r := range rows {
		if r[0] == "team-b" {
			t.Errorf("team-b still listed after rm")
		}
	}

	// Usage errors say what is expected and exit 2.
	cliWantOutput(t, "create without name", cliFails(t, d, 2, "ns", "create"),
		"berth: namespaces create: expected a namespace NAME (usage: berth namespaces create NAME [KEY=VALUE…])\n")
	cliWantOutput(t, "bad label", cliFails(t, d, 2, "ns", "label", "team-a", "oops"),
		"berth: namespaces label: invalid label \"oops\": expected KEY=VALUE (KEY= removes the label) (usage: berth namespaces label NAME [KEY=VALUE…])\n")
	cliWantOutput(t, "rm without name", cliFails(t, d, 2, "ns", "rm"),
		"berth: namespaces rm: expected at least one namespace NAME (usage: berth namespaces rm NAME [NAME…])\n")
}

func cliFirstColumn(rows [][]string) []string {
	var names []string
	for _, r := range rows {
		names = append(names, r[0])
	}
	return names
}

func TestCLIContainers(t *testing.T) {
	d := testutil.StartDaemon(t)
	const ns = "cli"
	cliCreateContainer(t, d, ns, "web-1", map[string]string{"app": "web"})
	cliCreateContainer(t, d, ns, "db-1", map[string]string{"app": "db"})
	cliCreateContainer(t, d, "other", "elsewhere", nil)

	out := cliOK(t, d, "-n", ns, "containers", "ls")
	header, rows := cliTable(t, out)
	if !reflect.DeepEqual(header, []string{"CONTAINER", "IMAGE", "RUNTIME"}) {
		t.Errorf("containers ls header: %q", header)
	}
	want := [][]string{
		{"db-1", "docker.io/library/busybox:latest", "io.containerd.runc.v2"},
		{"web-1", "docker.io/library/busybox:latest", "io.containerd.runc.v2"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("containers ls rows: %q, want %q", rows, want)
	}
	// The columns line up.
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	col := strings.Index(lines[0], "IMAGE")
	for _, l := range lines[1:] {
		if strings.Index(l, "docker.io") != col {
			t.Errorf("IMAGE column not aligned:\n%s", out)
		}
	}

	// Namespaces isolate; the environment chooses the namespace too.
	cliWantOutput(t, "ls -q in other", cliOK(t, d, "-n", "other", "c", "ls", "-q"), "elsewhere\n")
	cliWantOutput(t, "ls filtered", cliOK(t, d, "-n", ns, "container", "ls", "-q", "labels.app==web"), "web-1\n")

	var list []struct {
		ID      string
		Image   string
		Labels  map[string]string
		Runtime struct{ Name string }
	}
	out = cliOK(t, d, "-n", ns, "c", "ls", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("c ls --json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[1].ID != "web-1" || list[1].Labels["app"] != "web" || list[1].Runtime.Name != "io.containerd.runc.v2" {
		t.Errorf("c ls --json: %+v", list)
	}

	// info decodes the spec from its Any.
	var info struct {
		ID          string    `json:"id"`
		Image       string    `json:"image"`
		Snapshotter string    `json:"snapshotter"`
		SnapshotKey string    `json:"snapshot_key"`
		CreatedAt   time.Time `json:"created_at"`
		Runtime     struct{ Name string }
		Labels      map[string]string
		Spec        struct {
			OCIVersion string `json:"ociVersion"`
			Process    struct{ Args []string }
		}
	}
	out = cliOK(t, d, "-n", ns, "c", "info", "web-1")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("c info: %v\n%s", err, out)
	}
	if info.ID != "web-1" || info.Image != "docker.io/library/busybox:latest" || info.Runtime.Name != "io.containerd.runc.v2" ||
		info.Snapshotter != "overlayfs" || info.SnapshotKey != "web-1" || info.CreatedAt.IsZero() ||
		info.Spec.OCIVersion != "1.1.0" || !reflect.DeepEqual(info.Spec.Process.Args, []string{"sh", "-c", "true"}) {
		t.Errorf("c info: %+v\n%s", info, out)
	}
	var spec map[string]any
	out = cliOK(t, d, "-n", ns, "c", "info", "--spec", "web-1")
	if err := json.Unmarshal([]byte(out), &spec); err != nil || spec["ociVersion"] != "1.1.0" {
		t.Errorf("c info --spec: %v\n%s", err, out)
	}

	// label sets and removes through update_mask labels.KEY.
	cliOK(t, d, "-n", ns, "c", "label", "web-1", "app=", "tier=front", "containerd.io/restart.status=running")
	c, err := cliGetContainer(t, d, ns, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"tier": "front", "containerd.io/restart.status": "running"}; !reflect.DeepEqual(c.GetLabels(), want) {
		t.Errorf("labels after label: %v, want %v", c.GetLabels(), want)
	}
	if c.GetImage() != "docker.io/library/busybox:latest" || c.GetSpec().GetTypeUrl() != cliSpecURL {
		t.Errorf("label changed more than labels: %v", c)
	}
	cliWantOutput(t, "c label ID", cliOK(t, d, "-n", ns, "c", "label", "web-1"),
		"containerd.io/restart.status=running\ntier=front\n")

	// Errors.
	cliWantOutput(t, "info missing", cliFails(t, d, 1, "-n", ns, "c", "info", "nope"),
		"berth: container \"nope\" not found in namespace \"cli\" (list containers with: berth -n cli containers ls)\n")
	cliWantOutput(t, "label missing", cliFails(t, d, 1, "c", "label", "web-1", "a=b"),
		"berth: container \"web-1\" not found in namespace \"default\" (list containers with: berth -n default containers ls)\n")
	out = cliFails(t, d, 1, "-n", ns, "c", "ls", "labels.app===")
	if !strings.HasPrefix(out, `berth: cannot list containers in namespace "cli": invalid argument`) {
		t.Errorf("bad filter: %s", out)
	}
	cliWantOutput(t, "info without ID", cliFails(t, d, 2, "c", "info"),
		"berth: containers info: expected a container ID (usage: berth containers info ID)\n")
	cliWantOutput(t, "label with a bad pair", cliFails(t, d, 2, "c", "label", "web-1", "novalue"),
		"berth: containers label: invalid label \"novalue\": expected KEY=VALUE (KEY= removes the label) (usage: berth containers label ID [KEY=VALUE…])\n")

	// rm of several: the existing go, the missing are reported.
	out = cliFails(t, d, 1, "-n", ns, "c", "rm", "web-1", "nope", "db-1")
	cliWantOutput(t, "rm with a missing ID", out,
		"berth: container \"nope\" not found in namespace \"cli\" (list containers with: berth -n cli containers ls)\n")
	for _, id := range []string{"web-1", "db-1"} {
		if _, err := cliGetContainer(t, d, ns, id); err == nil {
			t.Errorf("container %s still there after rm", id)
		}
	}
	cliWantOutput(t, "ls after rm", cliOK(t, d, "-n", ns, "c", "ls"), "CONTAINER   IMAGE   RUNTIME\n")
	cliOK(t, d, "-n", "other", "c", "rm", "elsewhere")
	cliWantOutput(t, "ls --json of none", cliOK(t, d, "-n", "other", "c", "ls", "--json"), "[]\n")
}

// cliEventStream runs `berth events args…` against d and delivers its lines.
type cliEventStream struct {
	cmd   *exec.Cmd
	lines chan string
}

func cliStartEvents(t *testing.T, d *testutil.Daemon, args ...string) *cliEventStream {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t, "berth"), append([]string{"-a", d.Address, "events"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &cliEventStream{cmd: cmd, lines: make(chan string, 256)}
	go func() {
		defer close(e.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			e.lines <- s.Text()
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return e
}

// next returns the next line that is not about a probe namespace (see cliWaitSubscribed),
// failing the test after a timeout.
func (e *cliEventStream) next(t *testing.T) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-e.lines:
			if !ok {
				t.Fatal("berth events ended")
			}
			if strings.Contains(l, `"probe-`) {
				continue
			}
			return l
		case <-timeout:
			t.Fatal("no event within 10s")
		}
	}
}

// stop interrupts berth events, which is its normal end: it must exit 0.
func (e *cliEventStream) stop(t *testing.T) {
	t.Helper()
	e.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("berth events after an interrupt: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("berth events did not stop on an interrupt")
	}
}

// cliWaitSubscribed creates probe namespaces until every stream has shown one, so that the
// changes after it are known to happen while all are subscribed.
func cliWaitSubscribed(t *testing.T, d *testutil.Daemon, streams ...*cliEventStream) {
	t.Helper()
	pending := map[*cliEventStream]bool{}
	for _, e := range streams {
		pending[e] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; len(pending) > 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d event streams showed nothing within 10s", len(pending))
		}
		cliOK(t, d, "ns", "create", fmt.Sprintf("probe-%d", i))
		time.Sleep(100 * time.Millisecond)
		for e := range pending {
		drain:
			for {
				select {
				case l := <-e.lines:
					if !strings.Contains(l, `"probe-`) {
						t.Fatalf("unexpected event line: %q", l)
					}
					delete(pending, e)
				default:
					break drain
				}
			}
		}
	}
}

var cliEventLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (\S+) (/\S+) (\{.*\})$`)

func TestCLIEvents(t *testing.T) {
	d := testutil.StartDaemon(t)
	text := cliStartEvents(t, d)
	js := cliStartEvents(t, d, "--json")
	// Filters are ORed: deletes and namespace creations (which the probes need).
	deletes := cliStartEvents(t, d, `topic=="/containers/delete"`, `topic=="/namespaces/create"`)
	cliWaitSubscribed(t, d, text, js, deletes)

	cliOK(t, d, "ns", "create", "evns")
	cliCreateContainer(t, d, "evns", "e1", nil)
	cliOK(t, d, "-n", "evns", "c", "label", "e1", "k=v")
	cliOK(t, d, "-n", "evns", "c", "rm", "e1")

	type want struct{ ns, topic, field, value string }
	wants := []want{
		{"evns", "/namespaces/create", "name", "evns"},
		{"evns", "/containers/create", "id", "e1"},
		{"evns", "/containers/update", "id", "e1"},
		{"evns", "/containers/delete", "id", "e1"},
	}
	for _, w := range wants {
		l := text.next(t)
		m := cliEventLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("event line %q is not TIMESTAMP NAMESPACE TOPIC JSON", l)
		}
		var payload map[string]any
		if err := json.Unmarshal([]byte(m[4]), &payload); err != nil {
			t.Fatalf("event payload of %q: %v", l, err)
		}
		if m[3] != w.topic || payload[w.field] != w.value {
			t.Errorf("event line %q, want topic %s with %s=%s", l, w.topic, w.field, w.value)
		}
		if w.topic != "/namespaces/create" && m[2] != w.ns { // containerd publishes namespace events from the caller's namespace
			t.Errorf("event line %q, want namespace %s", l, w.ns)
		}
		if w.topic == "/containers/update" {
			if labels, _ := payload["labels"].(map[string]any); labels["k"] != "v" {
				t.Errorf("update event without the new label: %q", l)
			}
		}
	}

	for _, w := range wants {
		l := js.next(t)
		var e struct {
			Timestamp time.Time
			Namespace string
			Topic     string
			Type      string
			Event     map[string]any
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("events --json line %q: %v", l, err)
		}
		if e.Topic != w.topic || e.Event[w.field] != w.value || e.Timestamp.IsZero() || !strings.HasPrefix(e.Type, "containerd.events.") {
			t.Errorf("events --json line %q, want topic %s with %s=%s", l, w.topic, w.field, w.value)
		}
	}

	// The filters went to the daemon: the containers' create and update do not arrive.
	if l := deletes.next(t); !strings.Contains(l, " /namespaces/create ") || !strings.Contains(l, `"name":"evns"`) {
		t.Errorf("filtered stream: %q, want the creation of evns", l)
	}
	if l := deletes.next(t); !strings.Contains(l, " /containers/delete ") || !strings.Contains(l, `"id":"e1"`) {
		t.Errorf("filtered stream: %q, want the deletion of e1", l)
	}
	select {
	case l := <-deletes.lines:
		t.Errorf("filtered stream printed more: %q", l)
	case <-time.After(300 * time.Millisecond):
	}

	text.stop(t)
	js.stop(t)
	deletes.stop(t)
}

func TestCLIUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"ns", "ls"}, {"version"}, {"events"}} {
		cmd := exec.Command(testutil.Binary(t, "berth"), append([]string{"-a", sock, "--timeout", "2s"}, args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("%q: want exit status 1, got %v", args, err)
		}
		want := "berth: cannot reach berthd at " + sock + " (no socket there): is it running? (start berthd, or pass --address)\n"
		if !strings.HasSuffix(string(out), want) {
			t.Errorf("%q: got %q, want it to end with %q", args, out, want)
		}
	}

	cmd := exec.Command(testutil.Binary(t, "berth"), "ns", "ls")
	cmd.Env = append(os.Environ(), "BERTH_ADDRESS=", "CONTAINERD_ADDRESS="+sock)
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "cannot reach berthd at "+sock) {
		t.Errorf("CONTAINERD_ADDRESS is not honoured: %s", out)
	}
}
