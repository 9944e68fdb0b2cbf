package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/metadata"
)

// imgcliRun runs berth against d with stdin and returns stdout, stderr and the exit status.
func imgcliRun(t *testing.T, d *testutil.Daemon, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Binary(t, "berth"), append([]string{"-a", d.Address}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("berth %q: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// imgcliOK runs berth and fails the test unless it succeeds; it returns stdout.
func imgcliOK(t *testing.T, d *testutil.Daemon, stdin []byte, args ...string) string {
	t.Helper()
	out, errOut, code := imgcliRun(t, d, stdin, args...)
	if code != 0 {
		t.Fatalf("berth %q: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// imgcliFails runs berth, wants exit status 1, and returns stderr.
func imgcliFails(t *testing.T, d *testutil.Daemon, args ...string) string {
	t.Helper()
	out, errOut, code := imgcliRun(t, d, nil, args...)
	if code != 1 {
		t.Fatalf("berth %q: exit %d, want 1\n%s%s", args, code, out, errOut)
	}
	return errOut
}

// imgcliCtrBlobs checks with ctr content get that namespace ns holds each blob byte for byte.
func imgcliCtrBlobs(t *testing.T, d *testutil.Daemon, ns string, blobs map[digest.Digest][]byte) {
	t.Helper()
	for dg, want := range blobs {
		got, err := ctrIO(t, d, nil, "-n", ns, "content", "get", dg.String())
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ctr -n %s content get %s: %d bytes, %v; want the %d bytes of the archive", ns, dg, len(got), err, len(want))
		}
	}
}

// imgcliCtrImage returns the TYPE and DIGEST columns of ctr images ls for name.
func imgcliCtrImage(t *testing.T, d *testutil.Daemon, ns, name string) (mediaType string, dgst digest.Digest) {
	t.Helper()
	out := ctrOK(t, d, "-n", ns, "images", "ls")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+(\S+)\s+(sha256:[0-9a-f]{64})\s`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ctr -n %s images ls lacks %s:\n%s", ns, name, out)
	}
	return m[1], digest.Digest(m[2])
}

// imgcliNoLeftovers checks that an import left no lease and no ingest behind.
func imgcliNoLeftovers(t *testing.T, d *testutil.Daemon, ns string) {
	t.Helper()
	if out := ctrOK(t, d, "-n", ns, "leases", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("leases left in %s:\n%s", ns, out)
	}
	if out := ctrOK(t, d, "-n", ns, "content", "active"); strings.Count(out, "\n") > 1 {
		t.Errorf("ingests left in %s:\n%s", ns, out)
	}
}

// imgcliPartialIngest leaves an ingest ref in ns holding data, uncommitted, as an
// interrupted writer does.
func imgcliPartialIngest(t *testing.T, d *testutil.Daemon, ns, ref string, data []byte) {
	t.Helper()
	stream, err := contentapi.NewContentClient(d.Conn(t)).Write(nsCtx(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*contentapi.WriteContentRequest{{Action: contentapi.WriteAction_STAT, Ref: ref}, {Action: contentapi.WriteAction_WRITE, Data: data}} {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	stream.Recv()
}

// imgcliTarFiles reads the regular files of a tar.
func imgcliTarFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = b
	}
}

// imgcliWriteTar writes entries (name → data, in the order of names) as a tar at path.
func imgcliWriteTar(t *testing.T, path string, names []string, files map[string][]byte, links map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		if target, ok := links[name]; ok {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: ociEpoch}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: ociEpoch}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// imgcliDockerSave writes a `docker save` archive in the layout docker used before 25:
// <id>/layer.tar (uncompressed; the third links to the first), <id>/json, <id>/VERSION,
// <config>.json, manifest.json, repositories. It returns the path and the blobs an import
// must store: the config and the distinct layers.
func imgcliDockerSave(t *testing.T, tags []string) (string, map[digest.Digest][]byte) {
	t.Helper()
	tarOf := func(name string, data []byte) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: ociEpoch})
		tw.Write(data)
		tw.Close()
		return buf.Bytes()
	}
	l1 := tarOf("etc/one", []byte("one\n"))
	l2 := tarOf("bin/two", randomBytes(200_000, 21))
	created := ociEpoch
	config, _ := json.Marshal(ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/two"}},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(l1), digest.FromBytes(l2), digest.FromBytes(l1)}}})
	id := func(i int) string { return strings.Repeat(fmt.Sprint(i), 64) }
	cfgName := digest.FromBytes(config).Encoded() + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": tags,
		"Layers": []string{id(1) + "/layer.tar", id(2) + "/layer.tar", id(3) + "/layer.tar"}}})
	files := map[string][]byte{
		id(1) + "/VERSION": []byte("1.0"), id(1) + "/json": []byte(`{"id":"` + id(1) + `"}`), id(1) + "/layer.tar": l1,
		id(2) + "/VERSION": []byte("1.0"), id(2) + "/json": []byte(`{"id":"` + id(2) + `"}`), id(2) + "/layer.tar": l2,
		cfgName: config, "manifest.json": manifest, "repositories": []byte(`{}`),
	}
	names := []string{id(1) + "/VERSION", id(1) + "/json", id(1) + "/layer.tar", id(2) + "/VERSION", id(2) + "/json", id(2) + "/layer.tar",
		id(3) + "/layer.tar", cfgName, "manifest.json", "repositories"}
	path := filepath.Join(t.TempDir(), "docker-save.tar")
	imgcliWriteTar(t, path, names, files, map[string]string{id(3) + "/layer.tar": "../" + id(1) + "/layer.tar"})
	return path, map[digest.Digest][]byte{digest.FromBytes(config): config, digest.FromBytes(l1): l1, digest.FromBytes(l2): l2}
}

func TestCLIImagesImportOCI(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	name := "docker.io/library/tiny:latest"
	tarPath, manifest := buildOCIArchive(t, map[string][]byte{"etc/motd": []byte("berth\n"), "bin/hello": randomBytes(300_000, 11)}, name)
	blobs := ociArchiveBlobs(t, tarPath)

	// An ingest left with other bytes than the layer's start is discarded, with a message to
	// run again; one with the start of the layer is resumed. (Before any namespace has the
	// layer: berthd lets a namespace share a blob another one has.)
	var layer digest.Digest
	for dg, b := range blobs {
		if len(b) > 100_000 {
			layer = dg
		}
	}
	ref := "tar-blobs/sha256/" + layer.Encoded()
	imgcliPartialIngest(t, d, "stale", ref, []byte("not the layer"))
	mustContain(t, imgcliFails(t, d, "-n", "stale", "images", "import", tarPath),
		`ingest "`+ref+`" held 13 bytes that are not the start of this blob; it was discarded: run the command again`)
	if out := ctrOK(t, d, "-n", "stale", "content", "active"); strings.Contains(out, ref) {
		t.Errorf("the stale ingest was not discarded:\n%s", out)
	}
	imgcliPartialIngest(t, d, "resume", ref, blobs[layer][:1000])
	imgcliOK(t, d, nil, "-n", "resume", "images", "import", tarPath)
	imgcliCtrBlobs(t, d, "resume", blobs)
	imgcliOK(t, d, nil, "-n", "stale", "images", "import", tarPath)
	imgcliCtrBlobs(t, d, "stale", blobs)

	out := imgcliOK(t, d, nil, "images", "import", "--no-unpack", tarPath)
	mustContain(t, out, "imported "+name+" ("+manifest.String()+")", "written "+manifest.String())
	if _, dg := imgcliCtrImage(t, d, "default", name); dg != manifest {
		t.Errorf("ctr images ls: %s, want %s", dg, manifest)
	}
	mustContain(t, ctrOK(t, d, "images", "ls"), "linux/"+runtime.GOARCH)
	imgcliCtrBlobs(t, d, "default", blobs)
	mustContain(t, ctrOK(t, d, "content", "ls"), "containerd.io/gc.ref.content.config=", "containerd.io/gc.ref.content.l.0=", "containerd.io/gc.ref.content.m.0="+manifest.String())
	imgcliNoLeftovers(t, d, "default")

	// again: every blob is present; the image is updated in place
	out = imgcliOK(t, d, nil, "images", "import", tarPath)
	mustContain(t, out, "present "+manifest.String(), "imported "+name)
	// from stdin, into another namespace, quietly
	data, err := os.ReadFile(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if out := imgcliOK(t, d, data, "-n", "other", "images", "import", "-q", "-"); out != name+"\n" {
		t.Errorf("import -q from stdin printed %q", out)
	}
	imgcliCtrBlobs(t, d, "other", blobs)
	imgcliNoLeftovers(t, d, "other")

	// berth images ls: the table, --json (size = manifest + config + layers), -q
	ls := imgcliOK(t, d, nil, "images", "ls")
	if !regexp.MustCompile(`(?m)^REF\s+TYPE\s+DIGEST\s+SIZE\s+PLATFORMS\s+LABELS\n` + regexp.QuoteMeta(name) + `\s+` +
		regexp.QuoteMeta(ocispec.MediaTypeImageManifest) + `\s+` + manifest.String() + `\s+\d+\.\d KiB\s+linux/` + runtime.GOARCH + `\s+-\n$`).MatchString(ls) {
		t.Errorf("berth images ls:\n%s", ls)
	}
	var views []struct {
		Name      string   `json:"name"`
		Size      int64    `json:"size"`
		Platforms []string `json:"platforms"`
		Target    struct {
			Digest string `json:"digest"`
		} `json:"target"`
	}
	if err := json.Unmarshal([]byte(imgcliOK(t, d, nil, "images", "ls", "--json")), &views); err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, b := range blobs {
		if !strings.Contains(string(b), `"io.containerd.image.name"`) { // all but index.json
			size += int64(len(b))
		}
	}
	if len(views) != 1 || views[0].Name != name || views[0].Target.Digest != manifest.String() || views[0].Size != size {
		t.Errorf("images ls --json: %+v, want size %d", views, size)
	}
	if out := imgcliOK(t, d, nil, "images", "ls", "-q"); out != name+"\n" {
		t.Errorf("images ls -q: %q", out)
	}
	// inspect: image, manifest and config
	var inspect struct {
		Image    struct{ Name string }
		Manifest ocispec.Manifest
		Config   ocispec.Image
	}
	if err := json.Unmarshal([]byte(imgcliOK(t, d, nil, "images", "inspect", name)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Image.Name != name || len(inspect.Manifest.Layers) != 1 || inspect.Config.Architecture != runtime.GOARCH {
		t.Errorf("inspect: %+v", inspect)
	}

	// errors say what to do
	mustContain(t, imgcliFails(t, d, "images", "inspect", "nope"), `image "nope" not found in namespace "default" (list images with: berth -n default images ls)`)
	mustContain(t, imgcliFails(t, d, "images", "import", filepath.Join(t.TempDir(), "missing.tar")), "cannot open the archive")
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, data[:len(data)/2], 0o644)
	mustContain(t, imgcliFails(t, d, "images", "import", bad), "import "+bad+": ", "truncated")
	if _, errOut, code := imgcliRun(t, d, nil, "images", "import", "--platform", "linux/amd64", "--all-platforms", tarPath); code != 2 || !strings.Contains(errOut, "exclude each other") {
		t.Errorf("--platform with --all-platforms: exit %d %s", code, errOut)
	}
}

func TestCLIImagesImportDockerSave(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	tarPath, blobs := imgcliDockerSave(t, []string{"tiny:1", "example.com/team/app:2"})
	out := imgcliOK(t, d, nil, "-n", "b", "images", "import", tarPath)
	mustContain(t, out, "imported docker.io/library/tiny:1 (sha256:", "imported example.com/team/app:2 (sha256:")
	imgcliCtrBlobs(t, d, "b", blobs)
	imgcliNoLeftovers(t, d, "b")
	// ctr makes the same manifest of the same archive: same digests
	if out, err := d.Ctr("-n", "c", "images", "import", "--no-unpack", tarPath); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}
	for _, name := range []string{"docker.io/library/tiny:1", "example.com/team/app:2"} {
		bt, bd := imgcliCtrImage(t, d, "b", name)
		ct, cd := imgcliCtrImage(t, d, "c", name)
		if bt != "application/vnd.docker.distribution.manifest.v2+json" || bt != ct || bd != cd {
			t.Errorf("%s: berth made %s %s, ctr %s %s", name, bt, bd, ct, cd)
		}
	}
	// the manifest berth made, read back through ctr
	_, md := imgcliCtrImage(t, d, "b", "docker.io/library/tiny:1")
	b, err := ctrIO(t, d, nil, "-n", "b", "content", "get", md.String())
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Config.MediaType != "application/vnd.docker.container.image.v1+json" || len(m.Layers) != 3 ||
		m.Layers[0].MediaType != "application/vnd.docker.image.rootfs.diff.tar" || m.Layers[0].Digest != m.Layers[2].Digest {
		t.Errorf("manifest %s", b)
	}
}

func TestCLIImagesExportRoundTrip(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	name := "example.com/round/trip:1"
	tarPath, manifest := buildOCIArchive(t, map[string][]byte{"etc/a": []byte("a"), "bin/b": randomBytes(150_000, 12)}, name)
	blobs := ociArchiveBlobs(t, tarPath)
	imgcliOK(t, d, nil, "images", "import", tarPath)

	// berth export → ctr import in another namespace
	exported := filepath.Join(t.TempDir(), "out.tar")
	if out := imgcliOK(t, d, nil, "images", "export", exported, name); out != "" {
		t.Errorf("export printed %q", out)
	}
	files := imgcliTarFiles(t, exported)
	var dockerManifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &dockerManifest); err != nil || len(dockerManifest) != 1 ||
		!slices.Equal(dockerManifest[0].RepoTags, []string{"example.com/round/trip:1"}) || len(dockerManifest[0].Layers) != 1 {
		t.Errorf("manifest.json %s", files["manifest.json"])
	}
	for _, p := range append([]string{dockerManifest[0].Config}, dockerManifest[0].Layers...) {
		if _, ok := files[p]; !ok {
			t.Errorf("manifest.json names %s, not in the archive", p)
		}
	}
	if out, err := d.Ctr("-n", "other", "images", "import", "--no-unpack", exported); err != nil {
		t.Fatalf("ctr import of berth's export: %v\n%s", err, out)
	}
	if _, dg := imgcliCtrImage(t, d, "other", name); dg != manifest {
		t.Errorf("after the round trip: %s, want %s", dg, manifest)
	}
	for dg, b := range blobs {
		if !strings.Contains(string(b), `"io.containerd.image.name"`) { // all but the original index.json
			imgcliCtrBlobs(t, d, "other", map[digest.Digest][]byte{dg: b})
		}
	}
	// to stdout
	stdout, _, code := imgcliRun(t, d, nil, "images", "export", "-", name)
	if code != 0 || !bytes.HasPrefix([]byte(stdout), []byte("oci-layout")) {
		t.Errorf("export to stdout: exit %d, %d bytes", code, len(stdout))
	}

	// ctr export from berthd → berth import in a third namespace
	ctrExport := filepath.Join(t.TempDir(), "ctr.tar")
	if out, err := d.Ctr("images", "export", ctrExport, name); err != nil {
		t.Fatalf("ctr export: %v\n%s", err, out)
	}
	imgcliOK(t, d, nil, "-n", "third", "images", "import", ctrExport)
	if _, dg := imgcliCtrImage(t, d, "third", name); dg != manifest {
		t.Errorf("ctr export → berth import: %s, want %s", dg, manifest)
	}
	for dg, b := range blobs {
		if !strings.Contains(string(b), `"io.containerd.image.name"`) {
			imgcliCtrBlobs(t, d, "third", map[digest.Digest][]byte{dg: b})
		}
	}
	imgcliNoLeftovers(t, d, "third")
	mustContain(t, imgcliFails(t, d, "images", "export", filepath.Join(t.TempDir(), "x.tar"), "nope"), `image "nope" not found`)
}

// imgcliMultiArchive writes an OCI archive of a two-platform image (this host's
// architecture and another) named name; without the other platform's layer when drop is
// set. It returns the path, the index's digest and both images.
func imgcliMultiArchive(t *testing.T, name string, drop bool) (string, digest.Digest, *ociImage, *ociImage, string) {
	t.Helper()
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	host := imgcliPlatformImage(t, runtime.GOARCH)
	foreign := imgcliPlatformImage(t, other)
	index, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			withPlatform(host.Manifest, runtime.GOARCH),
			withPlatform(foreign.Manifest, other),
		},
	})
	img := &ociImage{Blobs: map[digest.Digest][]byte{}}
	maps.Copy(img.Blobs, host.Blobs)
	maps.Copy(img.Blobs, foreign.Blobs)
	if drop {
		delete(img.Blobs, foreign.Layers[0].Digest)
	}
	idx := digest.FromBytes(index)
	img.Blobs[idx] = index
	img.Manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: idx, Size: int64(len(index))}
	path := filepath.Join(t.TempDir(), "multi.tar")
	writeOCIArchive(t, img, name, path)
	return path, idx, host, foreign, other
}

// imgcliPlatformImage is a one-layer image whose config says linux/arch.
func imgcliPlatformImage(t *testing.T, arch string) *ociImage {
	t.Helper()
	layer, diffID := ociLayer(t, map[string][]byte{"etc/arch": []byte(arch + "\n"), "bin/x": randomBytes(50_000, uint64(len(arch)))})
	img := &ociImage{Blobs: map[digest.Digest][]byte{}, DiffIDs: []digest.Digest{diffID}}
	add := func(mt string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		img.Blobs[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	img.Layers = []ocispec.Descriptor{add(ocispec.MediaTypeImageLayerGzip, layer)}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: img.DiffIDs}})
	img.Config = add(ocispec.MediaTypeImageConfig, cfg)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: img.Config, Layers: img.Layers})
	img.Manifest = add(ocispec.MediaTypeImageManifest, m)
	return img
}

func withPlatform(d ocispec.Descriptor, arch string) ocispec.Descriptor {
	d.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
	return d
}

func TestCLIImagesPlatforms(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	name := "example.com/multi:1"
	full, idx, host, foreign, other := imgcliMultiArchive(t, name, false)
	has := func(ns string, dg digest.Digest) bool {
		return strings.Contains(ctrOK(t, d, "-n", ns, "content", "ls", "-q"), dg.String())
	}

	// this host's platform only: the other's blobs are not even written
	imgcliOK(t, d, nil, "-n", "host", "images", "import", full)
	if _, dg := imgcliCtrImage(t, d, "host", name); dg != idx {
		t.Errorf("image target %s, want the index %s", dg, idx)
	}
	imgcliCtrBlobs(t, d, "host", host.Blobs)
	if has("host", foreign.Layers[0].Digest) || has("host", foreign.Manifest.Digest) {
		t.Errorf("the %s blobs were imported for a %s host", other, runtime.GOARCH)
	}
	mustContain(t, imgcliOK(t, d, nil, "-n", "host", "images", "ls"), "linux/"+runtime.GOARCH+",linux/"+other)
	// all platforms
	imgcliOK(t, d, nil, "-n", "all", "images", "import", "--all-platforms", full)
	imgcliCtrBlobs(t, d, "all", host.Blobs)
	imgcliCtrBlobs(t, d, "all", foreign.Blobs)
	// the other platform only
	imgcliOK(t, d, nil, "-n", "other", "images", "import", "--platform", "linux/"+other, full)
	imgcliCtrBlobs(t, d, "other", foreign.Blobs)
	if has("other", host.Layers[0].Digest) {
		t.Errorf("the host's layer was imported with --platform linux/%s", other)
	}

	// the other platform's layer is missing (as in a one-platform save of a multi-platform image)
	partial, _, _, _, _ := imgcliMultiArchive(t, name, true)
	imgcliOK(t, d, nil, "-n", "partial", "images", "import", partial)
	imgcliCtrBlobs(t, d, "partial", host.Blobs)
	missing := foreign.Layers[0].Digest.String()
	errOut := imgcliFails(t, d, "-n", "partial2", "images", "import", "--all-platforms", partial)
	mustContain(t, errOut, "blob "+missing+" (layer 0 of the linux/"+other+" manifest "+foreign.Manifest.Digest.String()+") is not in the archive",
		"import one platform with --platform linux/"+runtime.GOARCH)
	errOut = imgcliFails(t, d, "-n", "partial2", "images", "import", "--platform", "linux/"+other, partial)
	mustContain(t, errOut, "blob "+missing, "--platform linux/"+runtime.GOARCH)
	// nothing was written by the failed imports
	if out := ctrOK(t, d, "-n", "partial2", "content", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("a failed import left blobs:\n%s", out)
	}
	imgcliNoLeftovers(t, d, "partial2")
	errOut = imgcliFails(t, d, "-n", "partial2", "images", "import", "--platform", "linux/s390x", partial)
	mustContain(t, errOut, "has no manifest for platform linux/s390x", "--all-platforms")

	// export of one platform: ctr imports it, and so does berth
	exported := filepath.Join(t.TempDir(), "host.tar")
	imgcliOK(t, d, nil, "-n", "all", "images", "export", exported, name)
	if _, ok := imgcliTarFiles(t, exported)["blobs/sha256/"+foreign.Layers[0].Digest.Encoded()]; ok {
		t.Errorf("a one-platform export holds the other platform's layer")
	}
	if out, err := d.Ctr("-n", "ctrhost", "images", "import", "--no-unpack", exported); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}
	if _, dg := imgcliCtrImage(t, d, "ctrhost", name); dg != idx {
		t.Errorf("ctr import of the export: %s, want %s", dg, idx)
	}
}

func TestCLIImagesTagRemove(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	a, ma := buildOCIArchive(t, map[string][]byte{"etc/a": []byte("a")}, "example.com/a:1")
	b, mb := buildOCIArchive(t, map[string][]byte{"etc/b": []byte("b")}, "example.com/b:1")
	imgcliOK(t, d, nil, "-n", "t", "images", "import", a)
	imgcliOK(t, d, nil, "-n", "t", "images", "import", b)
	if out := imgcliOK(t, d, nil, "-n", "t", "images", "tag", "example.com/a:1", "example.com/a:2", "example.com/a:3"); out != "example.com/a:2\nexample.com/a:3\n" {
		t.Errorf("tag printed %q", out)
	}
	if _, dg := imgcliCtrImage(t, d, "t", "example.com/a:3"); dg != ma {
		t.Errorf("tag: %s", dg)
	}
	errOut := imgcliFails(t, d, "-n", "t", "images", "tag", "example.com/b:1", "example.com/a:2")
	mustContain(t, errOut, `image "example.com/a:2" in namespace "t" already exists (pass --force to point it at example.com/b:1)`)
	imgcliOK(t, d, nil, "-n", "t", "images", "tag", "--force", "example.com/b:1", "example.com/a:2")
	if _, dg := imgcliCtrImage(t, d, "t", "example.com/a:2"); dg != mb {
		t.Errorf("tag --force: %s, want %s", dg, mb)
	}
	imgcliOK(t, d, nil, "-n", "t", "images", "label", "example.com/a:1", "team=web")
	if out := imgcliOK(t, d, nil, "-n", "t", "images", "label", "example.com/a:1"); out != "team=web\n" {
		t.Errorf("labels %q", out)
	}
	if out := imgcliOK(t, d, nil, "-n", "t", "images", "ls", "-q", "labels.team==web"); out != "example.com/a:1\n" {
		t.Errorf("images ls with a filter: %q", out)
	}

	// rm --sync: exactly the blobs of the images left remain
	imgcliOK(t, d, nil, "-n", "t", "images", "rm", "--sync", "example.com/a:1", "example.com/a:3")
	out := ctrOK(t, d, "-n", "t", "images", "ls", "-q")
	if strings.Fields(out) == nil || strings.Contains(out, "example.com/a:1") || strings.Contains(out, "example.com/a:3") {
		t.Errorf("images after rm:\n%s", out)
	}
	blobsB := ociArchiveBlobs(t, b)
	left := blobFiles(t, d)
	if len(left) != len(blobsB)-1 { // b's index.json blob is referenced by nothing
		t.Errorf("blob files after rm --sync: %d %v, want the %d of example.com/b:1", len(left), left, len(blobsB)-1)
	}
	for _, f := range left {
		if _, ok := blobsB[digest.NewDigestFromEncoded(digest.SHA256, f)]; !ok {
			t.Errorf("blob %s of a removed image left", f)
		}
	}
	errOut = imgcliFails(t, d, "-n", "t", "images", "rm", "example.com/a:1", "example.com/b:1")
	mustContain(t, errOut, `image "example.com/a:1" not found in namespace "t"`)
	if out := ctrOK(t, d, "-n", "t", "images", "ls", "-q"); strings.Contains(out, "example.com/b:1") {
		t.Errorf("rm went on after a missing image? it should have removed b:\n%s", out)
	}
}

func TestCLIContentAndLeases(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	data := randomBytes(3<<20+17, 31) // several write messages
	dg := digest.FromBytes(data)
	if out := imgcliOK(t, d, data, "content", "ingest", "my-ref"); out != dg.String()+"\n" {
		t.Errorf("ingest printed %q", out)
	}
	if got, err := ctrIO(t, d, nil, "content", "get", dg.String()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ctr content get: %d bytes, %v", len(got), err)
	}
	if got := imgcliOK(t, d, nil, "content", "get", dg.String()); got != string(data) {
		t.Errorf("berth content get: %d bytes", len(got))
	}
	ls := imgcliOK(t, d, nil, "content", "ls")
	if !regexp.MustCompile(`(?m)^DIGEST\s+SIZE\s+AGE\s+LABELS\n` + dg.String() + `\s+3\.0 MiB\s+(Less than a second|\d+ seconds?)\s+-$`).MatchString(ls) {
		t.Errorf("content ls:\n%s", ls)
	}
	imgcliOK(t, d, nil, "content", "label", dg.String(), "foo=bar", "containerd.io/gc.root=now")
	mustContain(t, ctrOK(t, d, "content", "ls"), "foo=bar", "containerd.io/gc.root=now")
	imgcliOK(t, d, nil, "content", "label", dg.String(), "foo=")
	if out := imgcliOK(t, d, nil, "content", "label", dg.String()); out != "containerd.io/gc.root=now\n" {
		t.Errorf("labels after removing foo: %q", out)
	}
	var views []struct {
		Digest string            `json:"digest"`
		Size   int64             `json:"size"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(imgcliOK(t, d, nil, "content", "ls", "--json")), &views); err != nil || len(views) != 1 || views[0].Size != int64(len(data)) {
		t.Errorf("content ls --json: %+v %v", views, err)
	}
	if out := imgcliOK(t, d, nil, "content", "ls", "-q", "labels.foo"); out != "" {
		t.Errorf("content ls with a filter: %q", out)
	}
	// the same data with the expected digest: present, not sent again
	if out := imgcliOK(t, d, data, "content", "ingest", "--expected-digest", dg.String(), "again"); out != dg.String()+"\n" {
		t.Errorf("ingest of present content printed %q", out)
	}
	absent := digest.FromString("absent")
	_, errOut, code := imgcliRun(t, d, []byte("other data"), "content", "ingest", "--expected-digest", absent.String(), "bad")
	if code != 1 || !strings.Contains(errOut, "not the "+absent.String()+" expected") {
		t.Errorf("ingest of other data than expected: exit %d %s", code, errOut)
	}
	if out := imgcliOK(t, d, nil, "content", "active"); strings.Count(out, "\n") != 1 {
		t.Errorf("ingests left:\n%s", out)
	}
	imgcliOK(t, d, nil, "content", "rm", dg.String())
	if _, err := ctrIO(t, d, nil, "content", "get", dg.String()); err == nil {
		t.Error("content get after berth content rm succeeded")
	}
	mustContain(t, imgcliFails(t, d, "content", "rm", dg.String()), `content "`+dg.String()+`" not found in namespace "default" (list content with: berth -n default content ls)`)
	if _, errOut, code := imgcliRun(t, d, nil, "content", "get", "sha256:../.."); code != 2 || !strings.Contains(errOut, "invalid digest") {
		t.Errorf("content get of a hostile digest: exit %d %s", code, errOut)
	}

	// leases
	if out := imgcliOK(t, d, nil, "leases", "create", "--id", "mine", "--expires", "1h", "team=a"); out != "mine\n" {
		t.Errorf("leases create printed %q", out)
	}
	generated := strings.TrimSpace(imgcliOK(t, d, nil, "leases", "create", "--expires", "0"))
	mustContain(t, ctrOK(t, d, "leases", "ls"), "mine", "team=a", "containerd.io/gc.expire=", generated)
	ls = imgcliOK(t, d, nil, "leases", "ls")
	if !regexp.MustCompile(`(?m)^ID\s+CREATED AT\s+LABELS\n`).MatchString(ls) || !regexp.MustCompile(`(?m)^mine\s+\S+Z\s+containerd.io/gc.expire=\S+,team=a$`).MatchString(ls) ||
		!regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(generated)+`\s+\S+Z\s+-$`).MatchString(ls) {
		t.Errorf("leases ls:\n%s", ls)
	}
	mustContain(t, imgcliFails(t, d, "leases", "create", "--id", "mine"), `lease "mine" already exists in namespace "default"`)
	// content written under a lease survives a sync collection until the lease goes
	lctx := nsCtx(t, "default")
	writeContent(t, contentapi.NewContentClient(d.Conn(t)), metadata.AppendToOutgoingContext(lctx, "containerd-lease", "mine"), "leased", []byte("leased data"), "")
	imgcliOK(t, d, nil, "leases", "rm", "--sync", generated)
	if out := ctrOK(t, d, "content", "ls", "-q"); !strings.Contains(out, digest.FromBytes([]byte("leased data")).String()) {
		t.Errorf("leased content collected:\n%s", out)
	}
	imgcliOK(t, d, nil, "leases", "rm", "--sync", "mine")
	if out := ctrOK(t, d, "content", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("content left after its lease was removed with --sync:\n%s", out)
	}
	if out := imgcliOK(t, d, nil, "leases", "ls", "-q"); out != "" {
		t.Errorf("leases left: %q", out)
	}
	mustContain(t, imgcliFails(t, d, "leases", "rm", "mine"), `lease "mine" not found in namespace "default" (list leases with: berth -n default leases ls)`)
}

// TestCLIImportCrash: berthd killed while an import writes a large layer shows no half
// blob after a restart, and the import run again completes the image.
func TestCLIImportCrash(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	name := "example.com/big:1"
	// a layer of 50 MB of random data: an uncompressed tar of one file
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	payload := randomBytes(50<<20, 41)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: int64(len(payload)), ModTime: ociEpoch})
	tw.Write(payload)
	tw.Close()
	img := &ociImage{Blobs: map[digest.Digest][]byte{}}
	add := func(mt string, b []byte) ocispec.Descriptor {
		dg := digest.FromBytes(b)
		img.Blobs[dg] = b
		return ocispec.Descriptor{MediaType: mt, Digest: dg, Size: int64(len(b))}
	}
	img.Layers = []ocispec.Descriptor{add(ocispec.MediaTypeImageLayer, layer.Bytes())}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{img.Layers[0].Digest}}})
	img.Config = add(ocispec.MediaTypeImageConfig, cfg)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: img.Config, Layers: img.Layers})
	img.Manifest = add(ocispec.MediaTypeImageManifest, m)
	tarPath := filepath.Join(t.TempDir(), "big.tar")
	writeOCIArchive(t, img, name, tarPath)
	big := img.Layers[0].Digest

	cmd := exec.Command(testutil.Binary(t, "berth"), "-a", d.Address, "images", "import", "--no-unpack", tarPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// kill berthd once the layer's ingest holds some data, but not all
	cc := contentapi.NewContentClient(d.Conn(t))
	ctx := nsCtx(t, "default")
	deadline := time.Now().Add(time.Minute)
	killed := false
	for !killed && time.Now().Before(deadline) {
		resp, err := cc.ListStatuses(ctx, &contentapi.ListStatusesRequest{})
		if err == nil {
			for _, st := range resp.Statuses {
				if strings.Contains(st.Ref, big.Encoded()) && st.Offset > 0 && st.Offset < img.Layers[0].Size/2 {
					syscall.Kill(d.Pid(), syscall.SIGKILL)
					killed = true
				}
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the import ended before berthd was killed (%v):\n%s", err, out.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if !killed {
		t.Fatal("no ingest of the layer seen")
	}
	d.Kill()
	if err := <-done; err == nil {
		t.Errorf("the import succeeded though berthd was killed:\n%s", out.String())
	}
	t.Logf("interrupted import:\n%s", out.String())

	d.Start()
	if ls := ctrOK(t, d, "content", "ls"); strings.Contains(ls, big.String()) {
		t.Errorf("a half-written layer is listed as a blob:\n%s", ls)
	}
	if slices.Contains(blobFiles(t, d), big.Encoded()) {
		t.Errorf("a half-written layer is a blob file")
	}
	active := ctrOK(t, d, "content", "active")
	t.Logf("ingests after the restart:\n%s", active)

	// again: the ingest resumes (or starts over), the image is whole
	again := imgcliOK(t, d, nil, "images", "import", "--no-unpack", tarPath)
	mustContain(t, again, "imported "+name)
	if _, dg := imgcliCtrImage(t, d, "default", name); dg != img.Manifest.Digest {
		t.Errorf("image %s, want %s", dg, img.Manifest.Digest)
	}
	imgcliCtrBlobs(t, d, "default", img.Blobs)
	if out := ctrOK(t, d, "content", "active"); strings.Contains(out, big.Encoded()) {
		t.Errorf("the layer's ingest is left after the import:\n%s", out)
	}
}
