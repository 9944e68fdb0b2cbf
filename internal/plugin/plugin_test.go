package plugin

import (
	"context"
	"errors"
	"testing"
)

func reg(t Type, id string, requires []Type, fn func(*InitContext) (any, error)) *Registration {
	if fn == nil {
		fn = func(*InitContext) (any, error) { return id, nil }
	}
	return &Registration{Type: t, ID: id, Requires: requires, InitFn: fn}
}

func TestInitOrderAndIsolation(t *testing.T) {
	var order []string
	track := func(id string, err error) func(*InitContext) (any, error) {
		return func(*InitContext) (any, error) { order = append(order, id); return id, err }
	}
	regs := []*Registration{
		reg(GRPCPlugin, "introspection", []Type{AllPlugins}, track("introspection", nil)),
		reg(GRPCPlugin, "containers", []Type{MetadataPlugin}, track("containers", nil)),
		reg(SnapshotPlugin, "broken", nil, track("broken", errors.New("no overlay"))),
		reg(GRPCPlugin, "snapshots", []Type{SnapshotPlugin}, track("snapshots", nil)),
		reg(MetadataPlugin, "bolt", []Type{EventPlugin}, track("bolt", nil)),
		reg(EventPlugin, "exchange", nil, track("exchange", nil)),
		reg(InternalPlugin, "panics", nil, func(*InitContext) (any, error) { panic("boom") }),
	}
	set, err := Init(context.Background(), regs, Env{Root: t.TempDir(), State: t.TempDir()}, nil, map[string]bool{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"exchange", "bolt", "containers", "broken", "introspection"}
	if len(order) != len(want) {
		t.Fatalf("init order %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("init order %v, want %v", order, want)
		}
	}
	status := map[string]error{}
	for _, p := range set.All() {
		status[p.Registration.ID] = p.Err()
	}
	if status["broken"] == nil || IsSkipped(status["broken"]) {
		t.Errorf("broken: %v, want a failure", status["broken"])
	}
	if !IsSkipped(status["snapshots"]) {
		t.Errorf("snapshots: %v, want skipped", status["snapshots"])
	}
	if status["panics"] == nil {
		t.Errorf("a panicking init must be reported as failed")
	}
	if status["containers"] != nil || status["introspection"] != nil {
		t.Errorf("unrelated plugins failed: %v", status)
	}
	if got := All[string](set, GRPCPlugin); len(got) != 2 || got["containers"] != "containers" {
		t.Errorf("All = %v", got)
	}
}

func TestDisabledAndDuplicates(t *testing.T) {
	regs := []*Registration{reg(EventPlugin, "exchange", nil, nil), reg(GRPCPlugin, "x", nil, nil)}
	set, err := Init(context.Background(), regs, Env{Root: "/r", State: "/s"}, nil, map[string]bool{"io.containerd.grpc.v1.x": true})
	if err != nil || len(set.All()) != 1 {
		t.Fatalf("disabled plugin listed: %v %v", err, set)
	}
	if _, err := Init(context.Background(), append(regs, reg(EventPlugin, "exchange", nil, nil)), Env{Root: "/r", State: "/s"}, nil, nil); err == nil {
		t.Fatal("duplicate registration accepted")
	}
	cyc := []*Registration{reg(EventPlugin, "a", []Type{GRPCPlugin}, nil), reg(GRPCPlugin, "b", []Type{EventPlugin}, nil)}
	if _, err := Init(context.Background(), cyc, Env{Root: "/r", State: "/s"}, nil, nil); err == nil {
		t.Fatal("cycle accepted")
	}
}

func TestGetTyped(t *testing.T) {
	var got int
	regs := []*Registration{
		reg(EventPlugin, "n", nil, func(*InitContext) (any, error) { return 42, nil }),
		reg(GRPCPlugin, "user", []Type{EventPlugin}, func(ic *InitContext) (any, error) {
			v, err := Get[int](ic, EventPlugin, "n")
			got = v
			if _, err2 := Get[string](ic, EventPlugin, "n"); err2 == nil {
				t.Error("Get with wrong type succeeded")
			}
			return nil, err
		}),
	}
	if _, err := Init(context.Background(), regs, Env{Root: "/r", State: "/s"}, nil, nil); err != nil || got != 42 {
		t.Fatalf("Get: %v %d", err, got)
	}
}
