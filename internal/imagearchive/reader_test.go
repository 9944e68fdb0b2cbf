package imagearchive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func amd64Only() Options {
	return Options{Platform: platforms.Only(linuxAMD64), PlatformName: "linux/amd64"}
}

func importBytes(t *testing.T, open func([]byte) io.Reader, archive []byte, opts Options) (*memStore, *Result, error) {
	t.Helper()
	s := newMemStore()
	res, err := Import(context.Background(), open(archive), s, opts)
	return s, res, err
}

func wantLabels(t *testing.T, res *Result, dgst digest.Digest, want map[string]string) {
	t.Helper()
	for _, l := range res.Labels {
		if l.Digest == dgst {
			if !reflect.DeepEqual(l.Labels, want) {
				t.Errorf("labels of %s: %v, want %v", dgst, l.Labels, want)
			}
			return
		}
	}
	if want != nil {
		t.Errorf("no labels for %s, want %v", dgst, want)
	}
}

func TestImportOCI(t *testing.T) {
	img := newTestImage(t, linuxAMD64,
		map[string][]byte{"etc/motd": []byte("berth\n")},
		map[string][]byte{"bin/big": randomData(MaxDocumentSize+1000, 7)}) // a layer read as a stream
	name := "docker.io/library/tiny:1.0"
	entries := ociEntries(t, img.Blobs, named(img.Manifest, name))
	archive := writeTar(t, entries)
	indexJSON := entries[len(entries)-1].Data
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			s, res, err := importBytes(t, mode.open, archive, amd64Only())
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != "oci" || len(res.Images) != 1 || res.Images[0].Name != name || res.Images[0].Target.Digest != img.Manifest.Digest ||
				res.Images[0].Target.MediaType != ocispec.MediaTypeImageManifest || res.Images[0].Target.Annotations[ocispec.AnnotationRefName] != "1.0" {
				t.Fatalf("result %+v", res)
			}
			want := maps.Clone(img.Blobs)
			want[digest.FromBytes(indexJSON)] = indexJSON
			if !reflect.DeepEqual(s.blobs, want) {
				t.Errorf("store has %d blobs, want the %d of the archive", len(s.blobs), len(want))
			}
			if res.Index.Digest != digest.FromBytes(indexJSON) || res.Index.MediaType != ocispec.MediaTypeImageIndex {
				t.Errorf("index %v", res.Index)
			}
			wantLabels(t, res, res.Index.Digest, map[string]string{"containerd.io/gc.ref.content.m.0": img.Manifest.Digest.String()})
			wantLabels(t, res, img.Manifest.Digest, map[string]string{
				"containerd.io/gc.ref.content.config": img.Config.Digest.String(),
				"containerd.io/gc.ref.content.l.0":    img.Layers[0].Digest.String(),
				"containerd.io/gc.ref.content.l.1":    img.Layers[1].Digest.String(),
			})
			for _, ref := range s.refs {
				if ref != "tar-index.json" && !strings.HasPrefix(ref, "tar-blobs/sha256/") {
					t.Errorf("ingest ref %q", ref)
				}
			}
			if len(res.Blobs) != len(want) {
				t.Errorf("result lists %d blobs written, want %d", len(res.Blobs), len(want))
			}
		})
	}
	// present blobs may be skipped by the ingester; the archive is still verified
	s := newMemStore()
	s.skip = true
	maps.Copy(s.blobs, img.Blobs)
	if _, err := Import(context.Background(), bytes.NewReader(archive), s, amd64Only()); err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(entries)
	for i, e := range bad {
		if e.Name == BlobPath(img.Layers[1].Digest) {
			data := slices.Clone(e.Data)
			data[len(data)-1] ^= 1
			bad[i].Data = data
		}
	}
	_, err := Import(context.Background(), bytes.NewReader(writeTar(t, bad)), s, amd64Only())
	var dm *DigestMismatchError
	if !errors.As(err, &dm) || dm.Expected != img.Layers[1].Digest {
		t.Errorf("import of a corrupt layer the store has: %v", err)
	}
}

// dockerSave lays an image out as docker save (before docker 25) does:
// <id>/layer.tar, <id>/json, <id>/VERSION, <config hex>.json,
// manifest.json and repositories; the third layer links to the first.
func dockerSave(t *testing.T, plat ocispec.Platform, tags []string) (entries []tarEntry, layers [][]byte, config []byte) {
	t.Helper()
	l1, d1 := testLayer(t, map[string][]byte{"etc/one": []byte("1")}, false)
	l2, d2 := testLayer(t, map[string][]byte{"etc/two": randomData(3000, 2)}, true)
	raw2, _ := testLayer(t, map[string][]byte{"etc/two": randomData(3000, 2)}, false)
	if digest.FromBytes(raw2) != d2 {
		t.Fatal("diff id of the gzip layer")
	}
	created := testEpoch
	config = mustJSON(t, ocispec.Image{Created: &created, Platform: plat,
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{d1, d2, d1}}})
	cfgName := digest.FromBytes(config).Encoded() + ".json"
	id := func(i int) string { return strings.Repeat(string(rune('a'+i)), 64) }
	entries = []tarEntry{
		{Name: id(0) + "/", Dir: true},
		{Name: id(0) + "/VERSION", Data: []byte("1.0")},
		{Name: id(0) + "/json", Data: []byte(`{"id":"` + id(0) + `"}`)},
		{Name: id(0) + "/layer.tar", Data: l1},
		{Name: id(1) + "/layer.tar", Data: l2},
		{Name: id(2) + "/layer.tar", Link: "../" + id(0) + "/layer.tar"},
		{Name: cfgName, Data: config},
		{Name: "manifest.json", Data: mustJSON(t, []dockerEntry{{Config: cfgName, RepoTags: tags,
			Layers: []string{id(0) + "/layer.tar", id(1) + "/layer.tar", id(2) + "/layer.tar"}}})},
		{Name: "repositories", Data: []byte(`{"tiny":{"1":"` + id(2) + `"}}`)},
	}
	return entries, [][]byte{l1, l2}, config
}

func TestImportDockerSave(t *testing.T) {
	entries, layers, config := dockerSave(t, linuxAMD64, []string{"tiny:1", "example.com:5000/team/app:2"})
	archive := writeTar(t, entries)
	cfg := ocispec.Descriptor{MediaType: MediaTypeDockerConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	l1 := ocispec.Descriptor{MediaType: MediaTypeDockerLayer, Digest: digest.FromBytes(layers[0]), Size: int64(len(layers[0]))}
	l2 := ocispec.Descriptor{MediaType: MediaTypeDockerLayerGzip, Digest: digest.FromBytes(layers[1]), Size: int64(len(layers[1]))}
	// the manifest containerd makes, byte for byte
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":` + string(mustJSON(t, cfg)) +
		`,"layers":[` + string(mustJSON(t, l1)) + "," + string(mustJSON(t, l2)) + "," + string(mustJSON(t, l1)) + `]}`)
	md := digest.FromBytes(manifest)
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			s, res, err := importBytes(t, mode.open, archive, amd64Only())
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != "docker" {
				t.Errorf("format %q", res.Format)
			}
			if got := s.blobs[md]; !bytes.Equal(got, manifest) {
				t.Fatalf("manifest\n%s\nwant\n%s", got, manifest)
			}
			var names []string
			for _, img := range res.Images {
				names = append(names, img.Name)
				if img.Target.Digest != md || img.Target.MediaType != MediaTypeDockerManifest || img.Target.Annotations[AnnotationImageName] != img.Name {
					t.Errorf("image %s target %+v", img.Name, img.Target)
				}
			}
			if want := []string{"docker.io/library/tiny:1", "example.com:5000/team/app:2"}; !slices.Equal(names, want) {
				t.Errorf("names %q, want %q", names, want)
			}
			idx, err := ParseIndex(s.blobs[res.Index.Digest], res.Index)
			if err != nil {
				t.Fatal(err)
			}
			if len(idx.Manifests) != 2 || idx.Manifests[0].Platform == nil || platforms.Format(*idx.Manifests[0].Platform) != "linux/amd64" ||
				idx.Manifests[1].Annotations[ocispec.AnnotationRefName] != "2" {
				t.Errorf("index %s", s.blobs[res.Index.Digest])
			}
			want := map[digest.Digest][]byte{cfg.Digest: config, l1.Digest: layers[0], l2.Digest: layers[1], md: manifest, res.Index.Digest: s.blobs[res.Index.Digest]}
			if !reflect.DeepEqual(s.blobs, want) {
				t.Errorf("store has %d blobs (%v), want %d: docker's per-layer json and VERSION are not blobs", len(s.blobs), slices.Collect(maps.Keys(s.blobs)), len(want))
			}
			wantLabels(t, res, res.Index.Digest, map[string]string{"containerd.io/gc.ref.content.m.0": md.String(), "containerd.io/gc.ref.content.m.1": md.String()})
			wantLabels(t, res, md, map[string]string{
				"containerd.io/gc.ref.content.config": cfg.Digest.String(),
				"containerd.io/gc.ref.content.l.0":    l1.Digest.String(),
				"containerd.io/gc.ref.content.l.1":    l2.Digest.String(),
				"containerd.io/gc.ref.content.l.2":    l1.Digest.String(),
			})
		})
	}
	// another platform: only with --platform or --all-platforms
	entries, _, _ = dockerSave(t, linuxARM64, []string{"tiny:arm"})
	archive = writeTar(t, entries)
	_, _, err := importBytes(t, modes[0].open, archive, amd64Only())
	if err == nil || !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "no image for platform linux/amd64 (it has linux/arm64): choose one with --platform linux/arm64") {
		t.Errorf("import of an arm64 docker archive for amd64: %v", err)
	}
	if _, res, err := importBytes(t, modes[1].open, archive, Options{AllPlatforms: true}); err != nil || len(res.Images) != 1 {
		t.Errorf("import with all platforms: %v", err)
	}
	// no tags: nothing named but the index, if asked
	entries, _, _ = dockerSave(t, linuxAMD64, nil)
	_, res, err := importBytes(t, modes[0].open, writeTar(t, entries), Options{AllPlatforms: true, IndexName: "example.com/all:1"})
	if err != nil || len(res.Images) != 1 || res.Images[0].Name != "example.com/all:1" || res.Images[0].Target.Digest != res.Index.Digest {
		t.Errorf("index name: %+v, %v", res, err)
	}
}

func TestImportPlatforms(t *testing.T) {
	m := newTestMultiImage(t)
	name := "example.com/multi:1"
	archive := writeTar(t, ociEntries(t, m.Blobs, named(m.Index, name)))
	arm := Options{Platform: platforms.Only(linuxARM64), PlatformName: "linux/arm64"}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			s, res, err := importBytes(t, mode.open, archive, amd64Only())
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Images) != 1 || res.Images[0].Target.Digest != m.Index.Digest {
				t.Fatalf("images %+v", res.Images)
			}
			wantLabels(t, res, m.Index.Digest, map[string]string{"containerd.io/gc.ref.content.m.0": m.AMD64.Manifest.Digest.String()})
			wantLabels(t, res, m.ARM64.Manifest.Digest, nil)
			_, hasARM := s.blobs[m.ARM64.Layers[0].Digest]
			if mode.name == "file" && hasARM {
				t.Errorf("an amd64 import from a file wrote the arm64 layer")
			}
			for d := range m.AMD64.Blobs {
				if _, ok := s.blobs[d]; !ok {
					t.Errorf("amd64 blob %s not written", d)
				}
			}

			_, res, err = importBytes(t, mode.open, archive, Options{AllPlatforms: true})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, res, m.Index.Digest, map[string]string{
				"containerd.io/gc.ref.content.m.0": m.AMD64.Manifest.Digest.String(),
				"containerd.io/gc.ref.content.m.1": m.ARM64.Manifest.Digest.String(),
			})
			_, res, err = importBytes(t, mode.open, archive, arm)
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, res, m.Index.Digest, map[string]string{"containerd.io/gc.ref.content.m.0": m.ARM64.Manifest.Digest.String()})

			_, _, err = importBytes(t, mode.open, archive, Options{Platform: platforms.Only(ocispec.Platform{OS: "linux", Architecture: "s390x"}), PlatformName: "linux/s390x"})
			var nm *NoMatchError
			if !errors.As(err, &nm) || !errdefs.IsNotFound(err) ||
				!strings.Contains(err.Error(), "has no manifest for platform linux/s390x (it has linux/amd64, linux/arm64/v8): choose one with --platform linux/amd64, or take all with --all-platforms") {
				t.Errorf("s390x: %v", err)
			}
		})
	}

	// the arm64 layer is missing, as in a single-platform docker save of a multi-platform image
	blobs := maps.Clone(m.Blobs)
	missing := m.ARM64.Layers[0].Digest
	delete(blobs, missing)
	archive = writeTar(t, ociEntries(t, blobs, named(m.Index, name)))
	for _, mode := range modes {
		t.Run(mode.name+"/missing", func(t *testing.T) {
			if _, _, err := importBytes(t, mode.open, archive, amd64Only()); err != nil {
				t.Errorf("amd64 import with the arm64 layer missing: %v", err)
			}
			for _, tc := range []struct {
				opts Options
				want string
			}{
				{Options{AllPlatforms: true}, "blob " + missing.String() + " (layer 0 of the linux/arm64/v8 manifest " + m.ARM64.Manifest.Digest.String() +
					") is not in the archive; import one platform with --platform linux/amd64 (not --all-platforms), or use an archive made with all platforms"},
				{arm, "blob " + missing.String() + " (layer 0 of the linux/arm64/v8 manifest " + m.ARM64.Manifest.Digest.String() +
					") is not in the archive; import a platform the archive has all of with --platform linux/amd64"},
			} {
				s, _, err := importBytes(t, mode.open, archive, tc.opts)
				var mb *MissingBlobError
				if !errors.As(err, &mb) || !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("import %+v:\n got %v\nwant %s", tc.opts, err, tc.want)
				}
				if mode.name == "file" && len(s.blobs) > 0 {
					t.Errorf("a file import that fails its plan wrote %d blobs", len(s.blobs))
				}
			}
		})
	}
}

// corrupt returns entries with the member name's data replaced.
func corrupt(entries []tarEntry, name string, data []byte) []tarEntry {
	out := slices.Clone(entries)
	for i := range out {
		if out[i].Name == name {
			out[i].Data = data
		}
	}
	return out
}

// withIndex returns entries with index.json listing manifests.
func withIndex(t *testing.T, entries []tarEntry, manifests ...ocispec.Descriptor) []tarEntry {
	return corrupt(entries, ocispec.ImageIndexFile, mustJSON(t, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: manifests}))
}

// withBlob returns entries with one more blob.
func withBlob(entries []tarEntry, b []byte) ([]tarEntry, ocispec.Descriptor) {
	d := digest.FromBytes(b)
	out := append(slices.Clone(entries[:len(entries)-1]), tarEntry{Name: BlobPath(d), Data: b}, entries[len(entries)-1])
	return out, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(b))}
}

func TestImportBadInput(t *testing.T) {
	big := randomData(MaxDocumentSize+4096, 9) // a layer that streams
	img := newTestImage(t, linuxAMD64, map[string][]byte{"etc/motd": []byte("hi")})
	bigLayer := img.add(ocispec.MediaTypeImageLayer, big)
	img.Layers = append(img.Layers, bigLayer)
	img.Manifest = img.add(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: img.Config, Layers: img.Layers}))
	name := "example.com/app:1"
	good := ociEntries(t, img.Blobs, named(img.Manifest, name))
	valid := writeTar(t, good)
	hexOf := func(d digest.Digest) string { return d.Encoded() }

	manifestWith := func(extra string) []byte {
		b := mustJSON(t, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, Config: img.Config, Layers: img.Layers[:1]})
		return append(b[:len(b)-1], []byte(","+extra+"}")...)
	}
	hostileDesc := func(d string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(d), Size: 10}
	}
	flipped := slices.Clone(big)
	flipped[len(flipped)/2] ^= 0xff
	smallFlip := slices.Clone(img.Blobs[img.Config.Digest])
	smallFlip[3] ^= 1
	ambiguous, ambiguousDesc := withBlob(good, manifestWith(`"manifests":[]`))
	schema1, schema1Desc := withBlob(good, manifestWith(`"fsLayers":[{"blobSum":"x"}]`))
	notJSON, notJSONDesc := withBlob(good, []byte(`{"schemaVersion":2,"config":`))
	hugeManifest, hugeDesc := withBlob(good, manifestWith(`"annotations":{"x":"`+strings.Repeat("x", MaxDocumentSize)+`"}`))
	ambiguousIndex, ambiguousIndexDesc := withBlob(good, []byte(`{"schemaVersion":2,"manifests":[],"layers":[]}`))
	ambiguousIndexDesc.MediaType = ocispec.MediaTypeImageIndex
	hostileLayer, hostileLayerDesc := withBlob(good, []byte(`{"schemaVersion":2,"config":`+string(mustJSON(t, img.Config))+`,"layers":[{"mediaType":"x","digest":"sha256:../../../etc/passwd","size":1}]}`))

	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
		class   func(error) bool
	}{
		{"truncated in a layer", valid[:len(valid)/2], "truncated", nil},
		{"truncated in a header", valid[:2048+100], "truncated", nil},
		{"truncated after a member", valid[:1024], "truncated", nil},
		{"not a tar", randomData(4096, 3), "not a tar archive", errdefs.IsInvalidArgument},
		{"empty", nil, "empty", errdefs.IsInvalidArgument},
		{"gzip garbage", append([]byte{0x1f, 0x8b, 8, 0}, randomData(100, 4)...), "", nil},
		{"no layout", writeTar(t, []tarEntry{{Name: "hello.txt", Data: []byte("hi")}}), "not an image archive", errdefs.IsInvalidArgument},
		{"layout version", writeTar(t, corrupt(good, "oci-layout", []byte(`{"imageLayoutVersion":"2.0.0"}`))), `unsupported version "2.0.0"`, errdefs.IsInvalidArgument},
		{"malformed index.json", writeTar(t, corrupt(good, "index.json", []byte(`{"schemaVersion":2,"manifests":[`))), "index.json: index sha256:", errdefs.IsInvalidArgument},
		{"index.json over 4 MiB", writeTar(t, corrupt(good, "index.json", make([]byte, MaxDocumentSize+1))), "index.json is 4194305 bytes", errdefs.IsInvalidArgument},
		{"malformed manifest", writeTar(t, withIndex(t, notJSON, named(notJSONDesc, name))), "malformed JSON", errdefs.IsInvalidArgument},
		{"layer bytes do not match the digest", writeTar(t, corrupt(good, BlobPath(bigLayer.Digest), flipped)), "blob " + bigLayer.Digest.String() + ": its bytes have digest", errdefs.IsInvalidArgument},
		{"config bytes do not match the digest", writeTar(t, corrupt(good, BlobPath(img.Config.Digest), smallFlip)), "blob " + img.Config.Digest.String() + ": its bytes have digest", errdefs.IsInvalidArgument},
		{"layer shorter than its descriptor", writeTar(t, corrupt(good, BlobPath(bigLayer.Digest), big[:len(big)-1])), bigLayer.Digest.String(), errdefs.IsInvalidArgument},
		{"missing config", writeTar(t, slices.DeleteFunc(slices.Clone(good), func(e tarEntry) bool { return e.Name == BlobPath(img.Config.Digest) })),
			"blob " + img.Config.Digest.String() + " (config of the manifest " + img.Manifest.Digest.String() + ") is not in the archive; the archive is incomplete", errdefs.IsNotFound},
		{"missing manifest", writeTar(t, slices.DeleteFunc(slices.Clone(good), func(e tarEntry) bool { return e.Name == BlobPath(img.Manifest.Digest) })),
			"blob " + img.Manifest.Digest.String() + " (image target " + img.Manifest.Digest.String() + ") is not in the archive", errdefs.IsNotFound},
		{"manifest over 4 MiB", writeTar(t, withIndex(t, hugeManifest, named(hugeDesc, name))), "manifest " + hugeDesc.Digest.String() + " is 4", errdefs.IsInvalidArgument},
		{"manifest over 4 MiB, descriptor lies", writeTar(t, withIndex(t, hugeManifest, named(ocispec.Descriptor{MediaType: hugeDesc.MediaType, Digest: hugeDesc.Digest, Size: 100}, name))), "more than the limit", errdefs.IsInvalidArgument},
		{"manifest that is also an index", writeTar(t, withIndex(t, ambiguous, named(ambiguousDesc, name))), "could be read as an index and as a manifest", errdefs.IsInvalidArgument},
		{"index that is also a manifest", writeTar(t, withIndex(t, ambiguousIndex, named(ambiguousIndexDesc, name))), "could be read as an index and as a manifest", errdefs.IsInvalidArgument},
		{"schema 1", writeTar(t, withIndex(t, schema1, named(schema1Desc, name))), "schema 1", errdefs.IsInvalidArgument},
		{"digest with a path", writeTar(t, withIndex(t, good, hostileDesc("sha256:../.."))), `digest "sha256:../..": not sha256`, errdefs.IsInvalidArgument},
		{"digest of the wrong length", writeTar(t, withIndex(t, good, hostileDesc("sha256:"+hexOf(img.Manifest.Digest)[:63]))), "not sha256 with 64", errdefs.IsInvalidArgument},
		{"md5 digest", writeTar(t, withIndex(t, good, hostileDesc("md5:d41d8cd98f00b204e9800998ecf8427e"))), `digest "md5:`, errdefs.IsInvalidArgument},
		{"upper-case digest", writeTar(t, withIndex(t, good, hostileDesc("sha256:"+strings.ToUpper(hexOf(img.Manifest.Digest))))), "not sha256", errdefs.IsInvalidArgument},
		{"layer digest with a path", writeTar(t, withIndex(t, hostileLayer, named(hostileLayerDesc, name))), `layer 0: digest "sha256:../../../etc/passwd"`, errdefs.IsInvalidArgument},
		{"member ../x", writeTar(t, append([]tarEntry{{Name: "../x", Data: []byte("x")}}, good...)), `archive member "../x": the name leaves the archive`, errdefs.IsInvalidArgument},
		{"member /abs", writeTar(t, append([]tarEntry{{Name: "/etc/passwd", Data: []byte("x")}}, good...)), `archive member "/etc/passwd": the name leaves the archive`, errdefs.IsInvalidArgument},
		{"member a/../../x", writeTar(t, append([]tarEntry{{Name: "blobs/../../x", Data: []byte("x")}}, good...)), "leaves the archive", errdefs.IsInvalidArgument},
		{"link out", writeTar(t, append([]tarEntry{{Name: "l", Link: "../../etc/shadow"}}, good...)), "outside the archive", errdefs.IsInvalidArgument},
		{"absolute link", writeTar(t, append([]tarEntry{{Name: "l", Link: "/etc/shadow"}}, good...)), "outside the archive", errdefs.IsInvalidArgument},
		{"md5 blob name", writeTar(t, append([]tarEntry{{Name: "blobs/md5/d41d8cd98f00b204e9800998ecf8427e", Data: nil}}, good...)), `digest "md5:`, errdefs.IsInvalidArgument},
		{"blob name with a dot dir", writeTar(t, append([]tarEntry{{Name: "blobs/sha256/x/y", Data: nil}}, good...)), "not sha256", errdefs.IsInvalidArgument},
		{"member twice", writeTar(t, append(slices.Clone(good), tarEntry{Name: "./" + BlobPath(img.Config.Digest), Data: []byte("x")})), "appears twice", errdefs.IsInvalidArgument},
		{"no image", writeTar(t, withIndex(t, good)), "lists no image", errdefs.IsInvalidArgument},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				_, _, err := importBytes(t, mode.open, tc.archive, amd64Only())
				if err == nil {
					t.Fatalf("import succeeded")
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q\nwant %q", err, tc.want)
				}
				if tc.class != nil && !tc.class(err) {
					t.Errorf("error %q is not of the class expected", err)
				}
			})
		}
	}
	if _, _, err := importBytes(t, modes[0].open, valid, amd64Only()); err != nil {
		t.Fatalf("the valid archive: %v", err)
	}
}

func TestImportDockerBadInput(t *testing.T) {
	entries, _, _ := dockerSave(t, linuxAMD64, []string{"tiny:1"})
	cfgName := entries[6].Name
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"malformed manifest.json", corrupt(entries, "manifest.json", []byte(`[{"Config":`)), "manifest.json: malformed JSON"},
		{"missing layer", slices.Delete(slices.Clone(entries), 4, 5), `its layer 1 "` + strings.Repeat("b", 64) + `/layer.tar" is not in the archive`},
		{"missing config", slices.Delete(slices.Clone(entries), 6, 7), `its config "` + cfgName + `" is not in the archive`},
		{"bad tag", corrupt(entries, "manifest.json", mustJSON(t, []dockerEntry{{Config: cfgName, RepoTags: []string{"UPPER:1"}}})), `invalid image reference "UPPER:1"`},
		{"config path escapes", corrupt(entries, "manifest.json", mustJSON(t, []dockerEntry{{Config: "../" + cfgName}})), "leaves the archive"},
		{"layer path escapes", corrupt(entries, "manifest.json", mustJSON(t, []dockerEntry{{Config: cfgName, Layers: []string{"/etc/passwd"}}})), "leaves the archive"},
		{"link loop", append(corrupt(entries, "manifest.json", mustJSON(t, []dockerEntry{{Config: cfgName, Layers: []string{"a"}}})), tarEntry{Name: "a", Link: "b"}, tarEntry{Name: "b", Link: "a"}), "too many levels of links"},
		{"no image", corrupt(entries, "manifest.json", []byte(`[]`)), "manifest.json lists no image"},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				_, _, err := importBytes(t, mode.open, writeTar(t, tc.entries), amd64Only())
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v\nwant %q", err, tc.want)
				}
			})
		}
	}
}

func TestImportNames(t *testing.T) {
	img := newTestImage(t, linuxAMD64, map[string][]byte{"a": []byte("a")})
	m := img.Manifest
	m.Platform = nil
	refOnly := func(ref string) ocispec.Descriptor {
		d := m
		d.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
		return d
	}
	for _, tc := range []struct {
		desc    ocispec.Descriptor
		base    string
		want    []string
		warning string
	}{
		{desc: named(m, "example.com/a:1"), want: []string{"example.com/a:1"}},
		{desc: refOnly("example.com/a:2"), want: []string{"example.com/a:2"}},
		{desc: refOnly("3"), base: "example.com/b", want: []string{"example.com/b:3"}},
		{desc: refOnly("3"), warning: `has the tag "3" but no image name: pass --base-name REPOSITORY`},
		{desc: m},
	} {
		_, res, err := importBytes(t, modes[0].open, writeTar(t, ociEntries(t, img.Blobs, tc.desc)), Options{AllPlatforms: true, BaseName: tc.base})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, i := range res.Images {
			names = append(names, i.Name)
		}
		if !slices.Equal(names, tc.want) || (tc.warning != "" && (len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], tc.warning))) {
			t.Errorf("%v base %q: names %q warnings %q", tc.desc.Annotations, tc.base, names, res.Warnings)
		}
	}
}

func TestGCLabels(t *testing.T) {
	d := func(i int) digest.Digest { return digest.FromBytes([]byte{byte(i)}) }
	got := GCLabels([]ocispec.Descriptor{
		{MediaType: MediaTypeDockerConfig, Digest: d(0)},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d(1)},
		{MediaType: MediaTypeDockerLayer, Digest: d(2)},
		{MediaType: ocispec.MediaTypeImageManifest, Digest: d(3)},
		{MediaType: MediaTypeDockerManifest, Digest: d(4)},
		{MediaType: ocispec.MediaTypeImageIndex, Digest: d(5)},
		{MediaType: "application/vnd.in-toto+json", Digest: d(6)},
		{MediaType: "application/vnd.oci.image.layer.v1.tar+zstd", Digest: d(7)},
	})
	want := map[string]string{
		"containerd.io/gc.ref.content.config": d(0).String(),
		"containerd.io/gc.ref.content.l.0":    d(1).String(),
		"containerd.io/gc.ref.content.l.1":    d(2).String(),
		"containerd.io/gc.ref.content.m.0":    d(3).String(),
		"containerd.io/gc.ref.content.m.1":    d(4).String(),
		"containerd.io/gc.ref.content.0":      d(5).String(),
		"containerd.io/gc.ref.content.1":      d(6).String(),
		"containerd.io/gc.ref.content.l.2":    d(7).String(),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GCLabels = %v\nwant %v", got, want)
	}
}

func TestReferences(t *testing.T) {
	for _, tc := range []struct{ in, full, familiar string }{
		{"busybox", "docker.io/library/busybox:latest", "busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"},
		{"user/app:2", "docker.io/user/app:2", "user/app:2"},
		{"index.docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3"},
		{"localhost/app:1", "localhost/app:1", "localhost/app:1"},
		{"example.com:5000/team/app:v1.2", "example.com:5000/team/app:v1.2", "example.com:5000/team/app:v1.2"},
		{"example.com/app@sha256:" + strings.Repeat("a", 64), "example.com/app@sha256:" + strings.Repeat("a", 64), ""},
	} {
		full, err := NormalizeReference(tc.in)
		if err != nil || full != tc.full {
			t.Errorf("NormalizeReference(%q) = %q, %v; want %q", tc.in, full, err, tc.full)
		}
		fam, ok := FamiliarTag(full)
		if fam != tc.familiar || ok != (tc.familiar != "") {
			t.Errorf("FamiliarTag(%q) = %q, %v; want %q", full, fam, ok, tc.familiar)
		}
	}
	for _, bad := range []string{"", "UPPER", "a b", "app:", "app:-x", "app@sha256:abc", "-app", "app//x", "example.com/../x", strings.Repeat("a", 500)} {
		if got, err := NormalizeReference(bad); err == nil || !errdefs.IsInvalidArgument(err) {
			t.Errorf("NormalizeReference(%q) = %q, %v; want an invalid argument", bad, got, err)
		}
	}
	if refName("docker.io/library/a:1") != "1" || refName("localhost:5000/a") != "localhost:5000/a" || refName("a@sha256:x") != "sha256:x" {
		t.Error("refName")
	}
}
