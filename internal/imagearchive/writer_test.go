package imagearchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readTar returns the regular files of an archive by name, refusing names
// docker load or ctr would not take.
func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if path.IsAbs(hdr.Name) || strings.Contains(hdr.Name, "..") {
			t.Fatalf("member %q", hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[hdr.Name]; dup {
			t.Fatalf("member %q twice", hdr.Name)
		}
		files[hdr.Name] = data
	}
}

// checkDockerLoad checks an archive against what docker load (20.10,
// image/tarexport/load.go) requires of manifest.json: every entry's config
// and layers are files of the archive at relative paths inside it; the
// config is an image config for linux whose rootfs.diff_ids match the
// layers one for one (each layer, decompressed, has its diff ID); every
// RepoTag is a tagged reference. It returns the entries.
func checkDockerLoad(t *testing.T, archive []byte) []DockerManifestEntry {
	t.Helper()
	files := readTar(t, archive)
	var entries []DockerManifestEntry
	if err := json.Unmarshal(files["manifest.json"], &entries); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	if len(entries) == 0 {
		t.Fatal("manifest.json lists no image")
	}
	safe := func(p string) []byte {
		t.Helper()
		if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") {
			t.Fatalf("path %q is not a clean relative path", p)
		}
		b, ok := files[p]
		if !ok {
			t.Fatalf("manifest.json names %q, which is not a file of the archive", p)
		}
		return b
	}
	for _, e := range entries {
		var img ocispec.Image
		if err := json.Unmarshal(safe(e.Config), &img); err != nil {
			t.Fatalf("config %s: %v", e.Config, err)
		}
		if img.OS != "linux" || img.RootFS.Type != "layers" {
			t.Errorf("config %s: os %q rootfs %q", e.Config, img.OS, img.RootFS.Type)
		}
		if len(img.RootFS.DiffIDs) != len(e.Layers) {
			t.Fatalf("config %s has %d diff IDs for %d layers", e.Config, len(img.RootFS.DiffIDs), len(e.Layers))
		}
		for i, l := range e.Layers {
			data := safe(l)
			if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
				zr, err := gzip.NewReader(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				if data, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if got := digest.FromBytes(data); got != img.RootFS.DiffIDs[i] {
				t.Errorf("layer %s has diff ID %s, config says %s", l, got, img.RootFS.DiffIDs[i])
			}
		}
		for _, tag := range e.RepoTags {
			r, err := parseNormalized(tag)
			if err != nil || r.digest != "" || strings.LastIndex(tag, ":") < strings.LastIndex(tag, "/") {
				t.Errorf("RepoTag %q is not a tagged reference: %v", tag, err)
			}
		}
	}
	return entries
}

func TestExport(t *testing.T) {
	ctx := context.Background()
	m := newTestMultiImage(t)
	single := newTestImage(t, linuxAMD64, map[string][]byte{"etc/single": []byte("1")})
	singleTarget := single.Manifest
	singleTarget.Platform = nil
	store := newMemStore()
	maps.Copy(store.blobs, m.Blobs)
	maps.Copy(store.blobs, single.Blobs)
	images := []Image{
		{Name: "docker.io/library/multi:1", Target: m.Index},
		{Name: "example.com/single:2", Target: singleTarget},
		{Name: "example.com/single@sha256:" + strings.Repeat("0", 64), Target: singleTarget},
	}
	amd := ExportOptions{Platform: platforms.Only(linuxAMD64), PlatformName: "linux/amd64"}

	var out bytes.Buffer
	if err := Export(ctx, &out, store, images, amd); err != nil {
		t.Fatal(err)
	}
	files := readTar(t, out.Bytes())
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 3 {
		t.Fatalf("index.json: %s", files["index.json"])
	}
	for i, want := range []struct{ name, ref string }{{"docker.io/library/multi:1", "1"}, {"example.com/single:2", "2"}, {images[2].Name, "sha256:" + strings.Repeat("0", 64)}} {
		d := idx.Manifests[i]
		if d.Digest != images[i].Target.Digest || d.MediaType != images[i].Target.MediaType || d.Size != images[i].Target.Size ||
			d.Annotations[AnnotationImageName] != want.name || d.Annotations[ocispec.AnnotationRefName] != want.ref {
			t.Errorf("index.json entry %d: %+v", i, d)
		}
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(files["oci-layout"], &layout); err != nil || layout.Version != "1.0.0" {
		t.Errorf("oci-layout %s", files["oci-layout"])
	}
	want := map[string]bool{BlobPath(m.Index.Digest): true}
	for d := range m.AMD64.Blobs {
		want[BlobPath(d)] = true
	}
	for d := range single.Blobs {
		want[BlobPath(d)] = true
	}
	for name, data := range files {
		if !strings.HasPrefix(name, "blobs/") {
			continue
		}
		if !want[name] {
			t.Errorf("exported %s, not of the platform asked for", name)
		}
		delete(want, name)
		if BlobPath(digest.FromBytes(data)) != name {
			t.Errorf("%s holds other bytes", name)
		}
	}
	if len(want) > 0 {
		t.Errorf("not exported: %v", slices.Collect(maps.Keys(want)))
	}
	entries := checkDockerLoad(t, out.Bytes())
	if len(entries) != 2 || !slices.Equal(entries[0].RepoTags, []string{"multi:1"}) || !slices.Equal(entries[1].RepoTags, []string{"example.com/single:2"}) ||
		entries[0].Config != BlobPath(m.AMD64.Config.Digest) {
		t.Errorf("manifest.json: %+v", entries)
	}

	// the export imports back with the same digests
	for _, mode := range modes {
		s, res, err := importBytes(t, mode.open, out.Bytes(), amd64Only())
		if err != nil {
			t.Fatalf("import of the export: %v", err)
		}
		var got []Image
		for _, i := range res.Images {
			got = append(got, Image{Name: i.Name, Target: ocispec.Descriptor{MediaType: i.Target.MediaType, Digest: i.Target.Digest, Size: i.Target.Size}})
		}
		var wantImages []Image
		for _, i := range images {
			wantImages = append(wantImages, Image{Name: i.Name, Target: ocispec.Descriptor{MediaType: i.Target.MediaType, Digest: i.Target.Digest, Size: i.Target.Size}})
		}
		if !reflect.DeepEqual(got, wantImages) {
			t.Errorf("%s: images %+v\nwant %+v", mode.name, got, wantImages)
		}
		for d, b := range store.blobs {
			if g, ok := s.blobs[d]; ok && !bytes.Equal(g, b) {
				t.Errorf("blob %s differs", d)
			}
		}
		// all platforms: the arm64 blobs were not exported
		_, _, err = importBytes(t, mode.open, out.Bytes(), Options{AllPlatforms: true})
		if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), m.ARM64.Manifest.Digest.String()) || !strings.Contains(err.Error(), "--platform linux/amd64") {
			t.Errorf("%s: import of an amd64 export with all platforms: %v", mode.name, err)
		}
	}

	// all platforms
	out.Reset()
	if err := Export(ctx, &out, store, images[:1], ExportOptions{AllPlatforms: true}); err != nil {
		t.Fatal(err)
	}
	files = readTar(t, out.Bytes())
	for d := range m.Blobs {
		if _, ok := files[BlobPath(d)]; !ok {
			t.Errorf("all platforms: %s not exported", d)
		}
	}
	checkDockerLoad(t, out.Bytes())
	if _, _, err := importBytes(t, modes[1].open, out.Bytes(), Options{AllPlatforms: true}); err != nil {
		t.Errorf("import of an all-platform export: %v", err)
	}

	// missing and corrupt content
	broken := newMemStore()
	maps.Copy(broken.blobs, single.Blobs)
	delete(broken.blobs, single.Layers[0].Digest)
	err := Export(ctx, io.Discard, broken, images[1:2], amd)
	var mb *MissingBlobError
	if !errors.As(err, &mb) || !strings.Contains(err.Error(), "blob "+single.Layers[0].Digest.String()+" (layer 0 of the manifest "+single.Manifest.Digest.String()+") is not in the content store") {
		t.Errorf("export of an image missing a layer: %v", err)
	}
	broken.blobs[single.Layers[0].Digest] = append(slices.Clone(single.Blobs[single.Layers[0].Digest]), 'x')
	err = Export(ctx, io.Discard, broken, images[1:2], amd)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), single.Layers[0].Digest.String()) {
		t.Errorf("export of a layer with extra bytes: %v", err)
	}
	b := slices.Clone(single.Blobs[single.Layers[0].Digest])
	b[0] ^= 1
	broken.blobs[single.Layers[0].Digest] = b
	err = Export(ctx, io.Discard, broken, images[1:2], amd)
	var dm *DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != single.Layers[0].Digest {
		t.Errorf("export of a corrupt layer: %v", err)
	}
}

// TestExportDockerSaveImport: a docker save archive imported and exported
// again loads in docker (per checkDockerLoad), tags familiar again.
func TestExportDockerSaveImport(t *testing.T) {
	entries, _, _ := dockerSave(t, linuxAMD64, []string{"tiny:1"})
	s, res, err := importBytes(t, modes[0].open, writeTar(t, entries), amd64Only())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Export(context.Background(), &out, s, res.Images, ExportOptions{Platform: platforms.Only(linuxAMD64)}); err != nil {
		t.Fatal(err)
	}
	got := checkDockerLoad(t, out.Bytes())
	if len(got) != 1 || !slices.Equal(got[0].RepoTags, []string{"tiny:1"}) || len(got[0].Layers) != 3 {
		t.Errorf("manifest.json %+v", got)
	}
}
