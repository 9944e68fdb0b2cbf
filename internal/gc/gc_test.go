package gc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/content/local"
	"github.com/berth-dev/berth/internal/leases"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/namespaces"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type env struct {
	t     *testing.T
	db    *metadata.DB
	cs    *metadata.ContentStore
	root  string
	gc    *Collector
	ctx   context.Context
	blobs map[string]digest.Digest
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	db, err := metadata.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	backend, err := local.New(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	cs := metadata.NewContentStore(db, backend)
	return &env{t: t, db: db, cs: cs, root: filepath.Join(dir, "content"), gc: New(db, cs, time.Millisecond, 2),
		ctx: namespaces.WithNamespace(context.Background(), "ns"), blobs: map[string]digest.Digest{}}
}

// put writes a blob named name with labels, in ctx.
func (e *env) put(ctx context.Context, name string, lbls map[string]string) digest.Digest {
	e.t.Helper()
	data := []byte("blob " + name)
	d := digest.FromBytes(data)
	err := content.WriteBlob(ctx, e.cs, "ref-"+name, bytes.NewReader(data), ocispec.Descriptor{Digest: d, Size: int64(len(data))}, content.WithLabels(lbls))
	if err != nil {
		e.t.Fatalf("put %s: %v", name, err)
	}
	e.blobs[name] = d
	return d
}

func (e *env) onDisk(name string) bool {
	_, err := os.Stat(filepath.Join(e.root, "blobs", "sha256", e.blobs[name].Encoded()))
	return err == nil
}

func (e *env) collect() Stats {
	e.t.Helper()
	st, err := e.gc.Collect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func TestCollectFromImagesAndLabels(t *testing.T) {
	e := newEnv(t)
	l0 := e.put(e.ctx, "layer0", nil)
	l1 := e.put(e.ctx, "layer1", nil)
	cfg := e.put(e.ctx, "config", nil)
	m := e.put(e.ctx, "manifest", map[string]string{
		"containerd.io/gc.ref.content.config": cfg.String(),
		"containerd.io/gc.ref.content.l.0":    l0.String(),
		"containerd.io/gc.ref.content.l.1":    l1.String(),
	})
	e.put(e.ctx, "orphan", nil)
	e.put(e.ctx, "rooted", map[string]string{"containerd.io/gc.root": "2026-01-01T00:00:00Z"})
	if _, err := e.db.Images().Create(e.ctx, metadata.Image{Name: "img:1", Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: m, Size: 10}}); err != nil {
		t.Fatal(err)
	}
	// the same orphan bytes held by an image in another namespace stay on disk
	other := namespaces.WithNamespace(context.Background(), "other")
	shared := e.put(other, "shared", nil)
	e.put(e.ctx, "shared", nil)
	if _, err := e.db.Images().Create(other, metadata.Image{Name: "keep", Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: shared, Size: 12}}); err != nil {
		t.Fatal(err)
	}

	st := e.collect()
	for _, n := range []string{"layer0", "layer1", "config", "manifest", "rooted", "shared"} {
		if !e.onDisk(n) {
			t.Errorf("%s was collected", n)
		}
	}
	if e.onDisk("orphan") || st.Blobs != 1 {
		t.Errorf("orphan kept (blobs removed: %d)", st.Blobs)
	}
	if _, err := e.cs.Info(e.ctx, e.blobs["shared"]); err == nil {
		t.Errorf("unreferenced record of shared in ns kept")
	}

	if err := e.db.Images().Delete(e.ctx, "img:1", ""); err != nil {
		t.Fatal(err)
	}
	e.collect()
	for _, n := range []string{"layer0", "layer1", "config", "manifest"} {
		if e.onDisk(n) {
			t.Errorf("%s kept after its image was deleted", n)
		}
	}
	if !e.onDisk("rooted") || !e.onDisk("shared") {
		t.Error("rooted or shared blob collected")
	}
}

func TestLeasesProtect(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		keep   bool
	}{
		{"live", map[string]string{"containerd.io/gc.expire": time.Now().Add(time.Hour).Format(time.RFC3339)}, true},
		{"noexpiry", nil, true},
		{"expired", map[string]string{"containerd.io/gc.expire": time.Now().Add(-time.Minute).Format(time.RFC3339)}, false},
	} {
		if _, err := e.db.Leases().Create(e.ctx, metadata.Lease{ID: tc.name, Labels: tc.labels}); err != nil {
			t.Fatal(err)
		}
		ctx := leases.WithLease(e.ctx, tc.name)
		e.put(ctx, tc.name, nil)
		// an ingest under the lease: open a writer and leave it
		w, err := e.cs.Writer(ctx, content.WithRef("ingest-"+tc.name))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("partial"))
		w.Close()
	}
	e.collect()
	for _, tc := range []struct {
		name string
		keep bool
	}{{"live", true}, {"noexpiry", true}, {"expired", false}} {
		if e.onDisk(tc.name) != tc.keep {
			t.Errorf("blob of lease %s on disk: %v, want %v", tc.name, !tc.keep, tc.keep)
		}
		_, err := e.cs.Status(e.ctx, "ingest-"+tc.name)
		if (err == nil) != tc.keep {
			t.Errorf("ingest of lease %s: %v, want kept=%v", tc.name, err, tc.keep)
		}
	}
	ls, _ := e.db.Leases().List(e.ctx)
	if len(ls) != 2 {
		t.Errorf("expired lease not removed: %v", ls)
	}
	// releasing the lease frees what it held
	if err := e.db.Leases().Delete(e.ctx, "live"); err != nil {
		t.Fatal(err)
	}
	e.collect()
	if e.onDisk("live") {
		t.Error("blob of a deleted lease kept")
	}
	ingests, _ := os.ReadDir(filepath.Join(e.root, "ingest"))
	if len(ingests) != 1 {
		t.Errorf("backend ingests left: %d, want 1 (noexpiry's)", len(ingests))
	}
}

func TestScheduledAfterDelete(t *testing.T) {
	e := newEnv(t)
	e.put(e.ctx, "x", nil)
	e.gc.Start(context.Background())
	defer e.gc.Close()
	time.Sleep(50 * time.Millisecond) // the start-up collection ran after its delay
	// unreferenced blobs stay until something deletes: x is not held by anything,
	// so the start-up collection already removed it
	if e.onDisk("x") {
		t.Fatal("start-up collection did not run")
	}
	d := e.put(e.ctx, "y", map[string]string{"containerd.io/gc.root": "x"})
	e.put(e.ctx, "z", map[string]string{"containerd.io/gc.root": "x"})
	if err := e.cs.Delete(e.ctx, d); err != nil {
		t.Fatal(err)
	}
	// one deletion is below the threshold (2): nothing runs
	time.Sleep(100 * time.Millisecond)
	if !e.onDisk("y") {
		t.Fatal("collected before the deletion threshold")
	}
	if err := e.cs.Delete(e.ctx, e.blobs["z"]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.onDisk("y") || e.onDisk("z") {
		if time.Now().After(deadline) {
			t.Fatal("no collection scheduled after a delete")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = fmt.Sprint
}
