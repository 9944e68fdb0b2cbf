package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	containers "github.com/containerd/containerd/api/services/containers/v1"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	introspection "github.com/containerd/containerd/api/services/introspection/v1"
	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func TestCtrVersionPluginsHealth(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	out, err := d.Ctr("version")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "Server:", "Version:  0.1.0-dev")
	uuid := regexp.MustCompile(`UUID: ([0-9a-f-]{36})`).FindStringSubmatch(out)
	if uuid == nil {
		t.Fatalf("no server UUID in:\n%s", out)
	}
	out, err = d.Ctr("plugins", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"exchange", "bolt", "version", "namespaces", "containers", "events", "healthcheck", "introspection"} {
		if !regexp.MustCompile(`(?m)^io\.containerd\.\S+\s+` + p + `\s+\S+\s+ok\s*$`).MatchString(out) {
			t.Errorf("plugin %s not listed ok:\n%s", p, out)
		}
	}
	conn := d.Conn(t)
	resp, err := introspection.NewIntrospectionClient(conn).Plugins(nsCtx(t, "default"), &introspection.PluginsRequest{Filters: []string{"type==io.containerd.grpc.v1,id==containers"}})
	if err != nil || len(resp.Plugins) != 1 || resp.Plugins[0].ID != "containers" {
		t.Fatalf("filtered plugins: %v %v", resp, err)
	}
	if _, err := introspection.NewIntrospectionClient(conn).Plugins(nsCtx(t, "default"), &introspection.PluginsRequest{Filters: []string{"id=="}}); !errdefs.IsInvalidArgument(native(err)) {
		t.Errorf("malformed plugin filter: %v, want InvalidArgument", err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(nsCtx(t, "default"), &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}

	// the UUID is kept under root across restarts
	d.Stop()
	d.Start()
	out, _ = d.Ctr("version")
	mustContain(t, out, "UUID: "+uuid[1])
	srv, err := introspection.NewIntrospectionClient(d.Conn(t)).Server(nsCtx(t, "default"), &emptypb.Empty{})
	if err != nil || srv.UUID != uuid[1] || srv.Pid != uint64(d.Pid()) {
		t.Fatalf("Server: %v %v (pid %d)", srv, err, d.Pid())
	}
}

func TestCtrNamespaces(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	steps := []struct {
		args []string
		ok   bool
		want []string
	}{
		{[]string{"namespaces", "create", "team-a", "owner=alice", "tier=gold"}, true, nil},
		{[]string{"namespaces", "create", "team-a"}, false, []string{"already exists"}},
		{[]string{"namespaces", "ls"}, true, []string{"team-a", "owner=alice", "tier=gold"}},
		{[]string{"namespaces", "label", "team-a", "tier=silver", "owner="}, true, nil},
		{[]string{"namespaces", "ls"}, true, []string{"team-a", "tier=silver"}},
		{[]string{"namespaces", "create", "../x"}, false, []string{"invalid argument"}},
	}
	for _, s := range steps {
		out, err := d.Ctr(s.args...)
		if (err == nil) != s.ok {
			t.Fatalf("ctr %v: err=%v, want ok=%v\n%s", s.args, err, s.ok, out)
		}
		mustContain(t, out, s.want...)
	}
	out, _ := d.Ctr("namespaces", "ls")
	if strings.Contains(out, "owner=alice") {
		t.Errorf("label owner was not removed:\n%s", out)
	}
	// a namespace holding a container cannot be removed
	createContainer(t, d.Conn(t), "team-a", "c1", nil)
	out, err := d.Ctr("namespaces", "rm", "team-a")
	if err == nil {
		t.Fatalf("removing a non-empty namespace succeeded:\n%s", out)
	}
	mustContain(t, out, "failed precondition", "containers")
	if _, err := d.Ctr("-n", "team-a", "containers", "rm", "c1"); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Ctr("namespaces", "rm", "team-a"); err != nil {
		t.Fatalf("rm empty namespace: %v\n%s", err, out)
	}
	out, _ = d.Ctr("namespaces", "ls")
	if strings.Contains(out, "team-a") {
		t.Errorf("namespace still listed:\n%s", out)
	}
	// Get of an unknown namespace answers with no labels (dockerd relies on it)
	resp, err := namespaces.NewNamespacesClient(d.Conn(t)).Get(nsCtx(t, "moby"), &namespaces.GetNamespaceRequest{Name: "moby"})
	if err != nil || resp.Namespace.Name != "moby" || len(resp.Namespace.Labels) != 0 {
		t.Errorf("Get unknown namespace: %v %v", resp, err)
	}
}

func TestCtrContainers(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	createContainer(t, conn, "apps", "web1", map[string]string{"app": "web", "a.b": "dotted"})
	createContainer(t, conn, "apps", "web2", map[string]string{"app": "web"})
	createContainer(t, conn, "apps", "db1", map[string]string{"app": "db"})
	createContainer(t, conn, "other", "elsewhere", nil)

	out, err := d.Ctr("-n", "apps", "containers", "ls")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "web1", "web2", "db1", "docker.io/library/busybox:latest", "io.containerd.runc.v2")
	if strings.Contains(out, "elsewhere") {
		t.Errorf("container of another namespace listed:\n%s", out)
	}
	for filter, want := range map[string][]string{
		"labels.app==web":                       {"web1", "web2"},
		`labels."a.b"==dotted`:                  {"web1"},
		"id~=^d":                                {"db1"},
		"labels.app!=web":                       {"db1"},
		"runtime.name==io.containerd.runc.v2":   {"web1", "web2", "db1"},
		"id==web1,labels.app==db":               {},
		"image~=busybox,labels.app==db":         {"db1"},
		"image==docker.io/library/other:latest": {},
	} {
		out, err := d.Ctr("-n", "apps", "containers", "ls", filter)
		if err != nil {
			t.Fatalf("filter %s: %v", filter, err)
		}
		got := regexp.MustCompile(`(?m)^(web1|web2|db1)\s`).FindAllStringSubmatch(out, -1)
		if len(got) != len(want) {
			t.Errorf("filter %s: got %v, want %v\n%s", filter, got, want, out)
		}
	}
	if out, err := d.Ctr("-n", "apps", "containers", "ls", "id==a b"); err == nil {
		t.Errorf("malformed filter accepted:\n%s", out)
	}

	out, err = d.Ctr("-n", "apps", "containers", "info", "web1")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, `"ID": "web1"`, `"app": "web"`, `"Name": "io.containerd.runc.v2"`, `"args"`)

	if out, err := d.Ctr("-n", "apps", "containers", "label", "web1", "tier=front", "app="); err != nil {
		t.Fatalf("label: %v\n%s", err, out)
	}
	c, err := containers.NewContainersClient(conn).Get(nsCtx(t, "apps"), &containers.GetContainerRequest{ID: "web1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Container.Labels["tier"] != "front" || c.Container.Labels["app"] != "" || c.Container.Labels["a.b"] != "dotted" {
		t.Errorf("labels after ctr label: %v", c.Container.Labels)
	}
	if !c.Container.UpdatedAt.AsTime().After(c.Container.CreatedAt.AsTime()) {
		t.Errorf("updated_at %v not after created_at %v", c.Container.UpdatedAt.AsTime(), c.Container.CreatedAt.AsTime())
	}

	if out, err := d.Ctr("-n", "apps", "containers", "delete", "web1", "db1"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	out, _ = d.Ctr("-n", "apps", "containers", "ls")
	if strings.Contains(out, "web1") || strings.Contains(out, "db1") || !strings.Contains(out, "web2") {
		t.Errorf("after delete:\n%s", out)
	}
	if out, err := d.Ctr("-n", "apps", "containers", "info", "web1"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("info of deleted container: %v\n%s", err, out)
	}
}

func TestCtrEvents(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", "-a", d.Address, "events")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // let the subscription reach the daemon
	conn := d.Conn(t)
	if _, err := d.Ctr("namespaces", "create", "evns"); err != nil {
		t.Fatal(err)
	}
	createContainer(t, conn, "evns", "ev1", nil)
	if _, err := d.Ctr("-n", "evns", "containers", "label", "ev1", "x=y"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ctr("-n", "evns", "containers", "rm", "ev1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ctr("namespaces", "label", "evns", "k=v"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ctr("namespaces", "rm", "evns"); err != nil {
		t.Fatal(err)
	}
	want := []string{"/namespaces/create", "/containers/create", "/containers/update", "/containers/delete", "/namespaces/update", "/namespaces/delete"}
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("ctr events ended; got %v", got)
			}
			for _, w := range want {
				if strings.Contains(l, " "+w+" ") {
					if !strings.Contains(l, "evns") {
						t.Errorf("event line lacks its namespace: %s", l)
					}
					got = append(got, w)
				}
			}
			if strings.Contains(l, "/containers/create") && !strings.Contains(l, `"id":"ev1"`) && !strings.Contains(l, "ev1") {
				t.Errorf("container create event lacks its id: %s", l)
			}
		case <-timeout:
			t.Fatalf("events seen %v, want %v", got, want)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event order %v, want %v", got, want)
		}
	}
}

func TestEventsFilterAndPublish(t *testing.T) {
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	ev := eventsapi.NewEventsClient(conn)
	ctx, cancel := context.WithCancel(nsCtx(t, "f1"))
	defer cancel()
	stream, err := ev.Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: []string{`topic=="/containers/delete"`, `namespace==f2,event.id==keep`}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	createContainer(t, conn, "f1", "skip", nil)
	createContainer(t, conn, "f2", "keep", nil)
	if _, err := containers.NewContainersClient(conn).Delete(nsCtx(t, "f1"), &containers.DeleteContainerRequest{ID: "skip"}); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for len(topics) < 2 {
		env, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		topics = append(topics, env.Namespace+env.Topic)
	}
	if topics[0] != "f2/containers/create" || topics[1] != "f1/containers/delete" {
		t.Errorf("filtered events %v", topics)
	}
	bad, err := ev.Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: []string{"topic==/x/"}})
	if err == nil {
		_, err = bad.Recv()
	}
	if !errdefs.IsInvalidArgument(native(err)) {
		t.Errorf("malformed subscribe filter: %v", err)
	}
	if _, err := ev.Publish(nsCtx(t, "f1"), &eventsapi.PublishRequest{Topic: "bad topic"}); !errdefs.IsInvalidArgument(native(err)) {
		t.Errorf("publish bad topic: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	cs := containers.NewContainersClient(conn)
	nss := namespaces.NewNamespacesClient(conn)
	before := treeOf(t, d.Root)
	nsBefore, err := nss.List(nsCtx(t, "default"), &namespaces.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 77)
	bigLabel := map[string]string{"k": strings.Repeat("v", 4096)}
	for _, tc := range []struct {
		name string
		call func() error
		is   func(error) bool
	}{
		{"container id ../x", func() error { return createErr(cs, nsCtx(t, "ok"), newContainer("../x", nil)) }, errdefs.IsInvalidArgument},
		{"container id a/b", func() error { return createErr(cs, nsCtx(t, "ok"), newContainer("a/b", nil)) }, errdefs.IsInvalidArgument},
		{"container id empty", func() error { return createErr(cs, nsCtx(t, "ok"), newContainer("", nil)) }, errdefs.IsInvalidArgument},
		{"container id 77", func() error { return createErr(cs, nsCtx(t, "ok"), newContainer(long, nil)) }, errdefs.IsInvalidArgument},
		{"namespace ../x", func() error { return createErr(cs, nsCtx(t, "../x"), newContainer("c", nil)) }, errdefs.IsInvalidArgument},
		{"namespace a/b", func() error { return createErr(cs, nsCtx(t, "a/b"), newContainer("c", nil)) }, errdefs.IsInvalidArgument},
		{"namespace 77", func() error { return createErr(cs, nsCtx(t, long), newContainer("c", nil)) }, errdefs.IsInvalidArgument},
		{"no namespace", func() error { return createErr(cs, context.Background(), newContainer("c", nil)) }, errdefs.IsFailedPrecondition},
		{"oversize container label", func() error { return createErr(cs, nsCtx(t, "ok"), newContainer("c", bigLabel)) }, errdefs.IsInvalidArgument},
		{"no runtime", func() error {
			c := newContainer("c", nil)
			c.Runtime = nil
			return createErr(cs, nsCtx(t, "ok"), c)
		}, errdefs.IsInvalidArgument},
		{"no spec", func() error {
			c := newContainer("c", nil)
			c.Spec = nil
			return createErr(cs, nsCtx(t, "ok"), c)
		}, errdefs.IsInvalidArgument},
		{"create namespace ../x", func() error {
			_, err := nss.Create(nsCtx(t, "default"), &namespaces.CreateNamespaceRequest{Namespace: &namespaces.Namespace{Name: "../x"}})
			return err
		}, errdefs.IsInvalidArgument},
		{"create namespace empty", func() error {
			_, err := nss.Create(nsCtx(t, "default"), &namespaces.CreateNamespaceRequest{Namespace: &namespaces.Namespace{}})
			return err
		}, errdefs.IsInvalidArgument},
		{"oversize namespace label", func() error {
			_, err := nss.Create(nsCtx(t, "default"), &namespaces.CreateNamespaceRequest{Namespace: &namespaces.Namespace{Name: "big", Labels: bigLabel}})
			return err
		}, errdefs.IsInvalidArgument},
		{"get missing", func() error {
			_, err := cs.Get(nsCtx(t, "ok"), &containers.GetContainerRequest{ID: "missing"})
			return err
		}, errdefs.IsNotFound},
		{"delete missing", func() error {
			_, err := cs.Delete(nsCtx(t, "ok"), &containers.DeleteContainerRequest{ID: "missing"})
			return err
		}, errdefs.IsNotFound},
		{"update missing", func() error {
			_, err := cs.Update(nsCtx(t, "ok"), &containers.UpdateContainerRequest{Container: newContainer("missing", nil)})
			return err
		}, errdefs.IsNotFound},
		{"delete missing namespace", func() error {
			_, err := nss.Delete(nsCtx(t, "default"), &namespaces.DeleteNamespaceRequest{Name: "nothere"})
			return err
		}, errdefs.IsNotFound},
		{"label missing namespace", func() error {
			_, err := nss.Update(nsCtx(t, "default"), &namespaces.UpdateNamespaceRequest{Namespace: &namespaces.Namespace{Name: "nope", Labels: map[string]string{"a": "b"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels.a"}}})
			return err
		}, errdefs.IsNotFound},
		{"bad list filter", func() error {
			_, err := cs.List(nsCtx(t, "ok"), &containers.ListContainersRequest{Filters: []string{"id=="}})
			return err
		}, errdefs.IsInvalidArgument},
	} {
		wantClass(t, tc.name, tc.call(), tc.is, "its class")
	}
	if t.Failed() {
		return
	}
	// a rejected request leaves nothing behind: no namespace, no file
	nsAfter, err := nss.List(nsCtx(t, "default"), &namespaces.ListNamespacesRequest{})
	if err != nil || len(nsAfter.Namespaces) != len(nsBefore.Namespaces) {
		t.Errorf("namespaces changed by rejected calls: %v -> %v", nsBefore.Namespaces, nsAfter.Namespaces)
	}
	if after := treeOf(t, d.Root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("root changed by rejected calls:\nbefore %v\nafter  %v", before, after)
	}

	// duplicates and field masks
	createContainer(t, conn, "ok", "dup", nil)
	wantClass(t, "second create", createErr(cs, nsCtx(t, "ok"), newContainer("dup", nil)), errdefs.IsAlreadyExists, "AlreadyExists")
	for _, mask := range [][]string{{"id"}, {"runtime"}, {"labels", "bogus"}, {"created_at"}} {
		_, err := cs.Update(nsCtx(t, "ok"), &containers.UpdateContainerRequest{Container: newContainer("dup", nil), UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}})
		wantClass(t, fmt.Sprintf("update mask %v", mask), err, errdefs.IsInvalidArgument, "InvalidArgument")
	}
	c := newContainer("dup", map[string]string{"x": "1"})
	c.Runtime.Name = "io.containerd.other.v1"
	_, err = cs.Update(nsCtx(t, "ok"), &containers.UpdateContainerRequest{Container: c})
	wantClass(t, "update immutable runtime", err, errdefs.IsInvalidArgument, "InvalidArgument")
	c = newContainer("dup", map[string]string{"x": "1", "y": "2"})
	c.Image = "changed"
	resp, err := cs.Update(nsCtx(t, "ok"), &containers.UpdateContainerRequest{Container: c, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels.x", "image"}}})
	if err != nil || resp.Container.Labels["x"] != "1" || resp.Container.Labels["y"] != "" || resp.Container.Image != "changed" {
		t.Errorf("masked update: %v %v", resp, err)
	}
}

func createErr(cs containers.ContainersClient, ctx context.Context, c *containers.Container) error {
	_, err := cs.Create(ctx, &containers.CreateContainerRequest{Container: c})
	return err
}

// treeOf lists the paths under dir, except files that change on every write.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, strings.TrimPrefix(p, dir))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCrashDuringCreateLoad kills berthd with SIGKILL while 16 clients
// create containers; every acknowledged container must be there after a
// restart and the database must pass bbolt's consistency check.
func TestCrashDuringCreateLoad(t *testing.T) {
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	cs := containers.NewContainersClient(conn)
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(testutil.WithNamespace(context.Background(), "crash"))
	defer cancel()
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("c-%d-%d", w, i)
				if _, err := cs.Create(ctx, &containers.CreateContainerRequest{Container: newContainer(id, map[string]string{"w": fmt.Sprint(w)})}); err != nil {
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}(w)
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Kill()
	wg.Wait()
	cancel()

	db, err := bolt.Open(filepath.Join(d.Root, "io.containerd.metadata.v1.bolt", "meta.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("database check after SIGKILL: %v", err)
	}

	d.Start()
	list, err := containers.NewContainersClient(d.Conn(t)).List(nsCtx(t, "crash"), &containers.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range list.Containers {
		have[c.ID] = true
	}
	missing := 0
	for _, id := range acked {
		if !have[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged containers lost after SIGKILL", missing, len(acked))
	}
	t.Logf("%d acknowledged, %d present after restart", len(acked), len(list.Containers))
}

func TestGracefulShutdownAndSocket(t *testing.T) {
	d := testutil.StartDaemon(t)
	fi, err := os.Stat(d.Address)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v %v, want 0660", fi.Mode(), err)
	}
	// a second daemon on the same socket refuses to start
	cmd := exec.Command(testutil.Binary(t, "berthd"), "--root", d.Root+"2", "--state", d.State+"2", "--address", d.Address, "--config", "/nonexistent-is-fine-without-flag")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "config") {
		t.Logf("%s", out)
	}
	cmd = exec.Command(testutil.Binary(t, "berthd"), "--root", d.Root+"2", "--state", d.State+"2", "--address", d.Address)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another daemon is serving") {
		t.Errorf("second daemon on a live socket: %v\n%s", err, out)
	}
	// and a second daemon on the same root too
	cmd = exec.Command(testutil.Binary(t, "berthd"), "--root", d.Root, "--state", d.State+"3", "--address", d.Address+"3")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("second daemon on the same root: %v\n%s", err, out)
	}
	// a stale socket file is replaced after SIGKILL
	d.Kill()
	if _, err := os.Stat(d.Address); err != nil {
		t.Fatalf("socket gone after SIGKILL? %v", err)
	}
	d.Start()
	// SIGTERM: a clean exit that removes the sockets
	d.Stop()
	if _, err := os.Stat(d.Address); !os.IsNotExist(err) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
	b, _ := os.ReadFile(d.Log)
	if !strings.Contains(string(b), "shutting down") {
		t.Errorf("no shutdown in log:\n%s", b)
	}
	_ = io.Discard
}
