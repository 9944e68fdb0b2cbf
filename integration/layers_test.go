package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/internal/testutil/busybox"
	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	namespaces "github.com/containerd/containerd/api/services/namespaces/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// manyLayerImage builds an image of busybox plus n layers, layer i adding
// /layers/f<i>, and writes it as an OCI archive.
func manyLayerImage(t *testing.T, n int, ref string) string {
	t.Helper()
	bb, bbID, err := busybox.Layer()
	if err != nil {
		t.Fatal(err)
	}
	img := &ociImage{Blobs: map[digest.Digest][]byte{}}
	addLayer := func(layer []byte, diffID digest.Digest) {
		d := digest.FromBytes(layer)
		img.Blobs[d] = layer
		img.Layers = append(img.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(layer))})
		img.DiffIDs = append(img.DiffIDs, diffID)
	}
	addLayer(bb, bbID)
	for i := 0; i < n; i++ {
		addLayer(ociLayer(t, map[string][]byte{fmt.Sprintf("layers/f%d", i): []byte(fmt.Sprintf("layer %d\n", i))}))
	}
	add := func(mt string, v any) ocispec.Descriptor {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b)
		img.Blobs[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	img.Config = add(ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.DiffIDs},
	})
	img.Manifest = add(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: img.Config, Layers: img.Layers,
	})
	p := filepath.Join(t.TempDir(), "layers.tar")
	writeOCIArchive(t, img, ref, p)
	return p
}

// TestCtr128Layers: an image of 129 layers unpacks, mounts past the
// mount(2) option page and runs, through each shim.
func TestCtr128Layers(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	archive := manyLayerImage(t, 128, "example.com/layers:128")
	for _, shim := range taskShims(t) {
		t.Run(shim, func(t *testing.T) {
			d := shimDaemon(t, shim)
			if out, err := d.Ctr("images", "import", archive); err != nil {
				t.Fatalf("import: %v\n%s", err, out)
			}
			out, err := d.Ctr("run", "--rm", "example.com/layers:128", "deep", "sh", "-c", "cat /layers/f0 /layers/f127; ls /layers | wc -l")
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			if got := strings.Fields(out); len(got) != 5 || got[1] != "0" || got[3] != "127" || got[4] != "128" {
				t.Errorf("output %q, want layer 0, layer 127 and 128 files", out)
			}
			dir := filepath.Join(t.TempDir(), "m")
			_ = os.MkdirAll(dir, 0o755)
			if out, err := d.Ctr("images", "mount", "example.com/layers:128", dir); err != nil {
				t.Fatalf("images mount: %v\n%s", err, out)
			}
			defer d.Ctr("images", "unmount", "--rm", dir)
			b, err := os.ReadFile(filepath.Join(dir, "layers", "f64"))
			if err != nil || string(b) != "layer 64\n" {
				t.Errorf("f64 through the mounted image: %q %v", b, err)
			}
		})
	}
}

// TestDiffRoundTrip: Diff of a changed snapshot, then Apply onto its parent,
// gives the same tree; and the namespace's default snapshotter label picks
// the snapshotter.
func TestDiffRoundTrip(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	ctx := nsCtx(t, "difftest")
	if out, err := d.Ctr("-n", "difftest", "images", "import", busyboxArchive(t)); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	sn := snapshotsapi.NewSnapshotsClient(conn)
	var chain string
	list, err := sn.List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: "overlayfs"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		r, err := list.Recv()
		if err != nil {
			break
		}
		for _, info := range r.Info {
			if info.Kind == snapshotsapi.Kind_COMMITTED {
				chain = info.Name
			}
		}
	}
	if chain == "" {
		t.Fatal("no committed snapshot after import")
	}
	// change a snapshot: add, modify, remove, make a directory opaque
	prep, err := sn.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: "overlayfs", Key: "changed", Parent: chain})
	if err != nil {
		t.Fatal(err)
	}
	err = mount.WithTempMount(context.Background(), mount.FromProto(prep.Mounts), func(root string) error {
		for _, step := range []func() error{
			func() error { return os.WriteFile(filepath.Join(root, "etc", "new"), []byte("added"), 0o600) },
			func() error {
				return os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o644)
			},
			func() error { return os.Remove(filepath.Join(root, "bin", "wc")) },
			func() error { return os.RemoveAll(filepath.Join(root, "var")) },
			func() error { return os.MkdirAll(filepath.Join(root, "var", "lib"), 0o700) },
			func() error { return os.Symlink("/etc/new", filepath.Join(root, "link")) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	view, err := sn.View(ctx, &snapshotsapi.ViewSnapshotRequest{Snapshotter: "overlayfs", Key: "base-view", Parent: chain})
	if err != nil {
		t.Fatal(err)
	}
	df := diffapi.NewDiffClient(conn)
	layer, err := df.Diff(ctx, &diffapi.DiffRequest{Left: view.Mounts, Right: prep.Mounts, Ref: "roundtrip"})
	if err != nil {
		t.Fatal(err)
	}
	// apply onto a fresh child of the same parent, in the native snapshotter
	// chosen through the namespace label
	if _, err := namespaces.NewNamespacesClient(conn).Update(ctx, &namespaces.UpdateNamespaceRequest{
		Namespace: &namespaces.Namespace{Name: "difftest", Labels: map[string]string{"containerd.io/defaults/snapshotter": "native"}},
	}); err != nil {
		t.Fatal(err)
	}
	base, err := sn.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Key: "native-base"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: "native", Key: "native-base"}); err != nil {
		t.Fatalf("default snapshotter label not honoured: %v", err)
	}
	bbLayer := firstLayer(t, d, "difftest")
	if _, err := df.Apply(ctx, &diffapi.ApplyRequest{Diff: bbLayer, Mounts: base.Mounts}); err != nil {
		t.Fatal(err)
	}
	applied, err := df.Apply(ctx, &diffapi.ApplyRequest{Diff: layer.Diff, Mounts: base.Mounts})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(applied.Applied.Digest, "sha256:") {
		t.Errorf("applied digest %q", applied.Applied.Digest)
	}
	var want, got string
	_ = mount.WithReadonlyTempMount(context.Background(), mount.FromProto(prep.Mounts), func(root string) error {
		want = treeString(t, root)
		return nil
	})
	_ = mount.WithReadonlyTempMount(context.Background(), mount.FromProto(base.Mounts), func(root string) error {
		got = treeString(t, root)
		return nil
	})
	if want != got {
		t.Errorf("tree after Diff+Apply differs:\nwant:\n%s\ngot:\n%s", want, got)
	}
	for _, must := range []string{"/etc/new 600 added", "/var/lib 700", "/link -> /etc/new"} {
		if !strings.Contains(got, must) {
			t.Errorf("applied tree lacks %q", must)
		}
	}
	if strings.Contains(got, "/bin/wc") {
		t.Error("removed file came back")
	}
}

// firstLayer returns the descriptor of the imported busybox layer.
func firstLayer(t *testing.T, d *testutil.Daemon, ns string) *types.Descriptor {
	t.Helper()
	b, _, err := busybox.Layer()
	if err != nil {
		t.Fatal(err)
	}
	return &types.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(b).String(), Size: int64(len(b))}
}

// treeString describes a tree: path, mode bits, content or link target.
func treeString(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, "%s -> %s\n", rel, target)
		case fi.IsDir():
			fmt.Fprintf(&b, "%s %o\n", rel, fi.Mode().Perm())
		default:
			data, _ := os.ReadFile(p)
			if len(data) > 64 {
				data = []byte(digest.FromBytes(data))
			}
			fmt.Fprintf(&b, "%s %o %s\n", rel, fi.Mode().Perm(), data)
		}
		return nil
	})
	return b.String()
}
