package shim

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/shim/bootstrap"
	"github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/proto"
)

// recorder is an eventPublisher that keeps "topic:id" per event.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) publish(_ context.Context, topic string, ev proto.Message) {
	id := ""
	switch e := ev.(type) {
	case *events.TaskExit:
		id = e.ID
	case *events.TaskExecStarted:
		id = e.ExecID
	case *events.TaskStart:
		id = e.ContainerID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, topic+":"+id)
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// newTestContainer registers a created container "c" whose init has pid
// 100, as Create leaves it.
func newTestContainer(t *testing.T) (*service, *recorder, *process) {
	t.Helper()
	rec := &recorder{}
	s := newService(context.Background(), "ns", rec, func() {})
	c := &container{id: "c", bundle: t.TempDir(), execs: map[string]*process{}, ready: true}
	p := &process{c: c, id: "c", init: true, pid: 100, done: make(chan struct{})}
	c.init = p
	s.containers["c"] = c
	s.byPid[100] = p
	return s, rec, p
}

func addExec(s *service, id string) *process {
	c := s.containers["c"]
	p := &process{c: c, id: id, done: make(chan struct{})}
	c.execs[id] = p
	return p
}

func TestInitExitDuringStart(t *testing.T) {
	s, rec, p := newTestContainer(t)
	p.starting = true // Start has run `runc start`, which has not returned
	s.handleExit(exit{pid: 100, status: 0, at: time.Now()})
	if got := rec.events(); len(got) != 0 {
		t.Fatalf("events before Start returned: %q", got)
	}
	s.initStarted(p, nil)
	want := []string{"/tasks/start:c", "/tasks/exit:c"}
	if got := rec.events(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	select {
	case <-p.done:
	default:
		t.Fatal("Wait would not return")
	}
}

func TestExecExitBeforeItsPidIsKnown(t *testing.T) {
	s, rec, _ := newTestContainer(t)
	s.initStarted(s.containers["c"].init, nil)
	e := addExec(s, "e1")
	e.starting = true
	s.starting++
	s.handleExit(exit{pid: 200, status: 7, at: time.Now()}) // e1's pid, not known yet
	s.handleExit(exit{pid: 300, status: 0, at: time.Now()}) // some other child
	s.execStarted(e, nil, 200, nil)
	want := []string{"/tasks/start:c", "/tasks/exec-started:e1", "/tasks/exit:e1"}
	if got := rec.events(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if e.status != 7 || e.state != stateStopped {
		t.Fatalf("exec state %v status %d, want stopped with 7", e.state, e.status)
	}
	if len(s.held) != 0 {
		t.Fatalf("held exits after all starts ended: %v", s.held)
	}
}

func TestInitExitWaitsForExecs(t *testing.T) {
	s, rec, p := newTestContainer(t)
	s.initStarted(p, nil)
	e := addExec(s, "e1")
	e.starting = true
	s.starting++
	s.execStarted(e, nil, 200, nil)
	s.handleExit(exit{pid: 100, status: 137, at: time.Now()})
	if got := rec.events(); slices.Contains(got, "/tasks/exit:c") {
		t.Fatalf("init exit reported while an exec runs: %q", got)
	}
	s.handleExit(exit{pid: 200, status: 137, at: time.Now()})
	want := []string{"/tasks/start:c", "/tasks/exec-started:e1", "/tasks/exit:e1", "/tasks/exit:c"}
	if got := rec.events(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestExitReportedOnce(t *testing.T) {
	s, rec, p := newTestContainer(t)
	s.initStarted(p, nil)
	s.handleExit(exit{pid: 100, status: 1, at: time.Now()})
	s.handleExit(exit{pid: 100, status: 2, at: time.Now()}) // a reused pid, not ours any more
	want := []string{"/tasks/start:c", "/tasks/exit:c"}
	if got := rec.events(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if p.status != 1 {
		t.Fatalf("status %d, want the first exit's 1", p.status)
	}
}

func TestUnknownExitsAreDroppedWhenNothingStarts(t *testing.T) {
	s, _, _ := newTestContainer(t)
	for i := range 10 {
		s.handleExit(exit{pid: 1000 + i})
	}
	if len(s.held) != 0 {
		t.Fatalf("held %d exits with no start in flight", len(s.held))
	}
}

func TestSocketPath(t *testing.T) {
	for _, tc := range []struct {
		bundle, wantDir string
	}{
		{"/run/berth/io.containerd.runtime.v2.task/default/c1", "/run/berth/s"},
		{"/tmp/x/state/io.containerd.runtime.v2.task/ns/c1", "/tmp/x/state/s"},
		{"/somewhere/else/c1", "/run/berth/s"},
		{"/" + strings.Repeat("d", 80) + "/io.containerd.runtime.v2.task/ns/c1", "/run/berth/s"},
	} {
		p := socketPath("/run/berth/berthd.sock", "ns", "c1", tc.bundle)
		if len(p) > bootstrap.MaxSocketPath {
			t.Errorf("%s: socket path %d bytes long", tc.bundle, len(p))
		}
		if got := p[:len(p)-65]; got != tc.wantDir {
			t.Errorf("%s: socket dir %s, want %s", tc.bundle, got, tc.wantDir)
		}
	}
	a := socketPath("/a.sock", "ns", "c1", "/x")
	if a != socketPath("/a.sock", "ns", "c1", "/x") || a == socketPath("/a.sock", "ns", "c2", "/x") {
		t.Error("socket paths are not a function of (address, namespace, id)")
	}
}
