package imagearchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var testEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// testLayer is a layer tar holding files (uncompressed), and, gzipped when
// compress is set, the blob.
func testLayer(t testing.TB, files map[string][]byte, compress bool) (blob []byte, diffID digest.Digest) {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: testEpoch}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	diffID = digest.FromBytes(raw.Bytes())
	if !compress {
		return raw.Bytes(), diffID
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	return gz.Bytes(), diffID
}

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(n), byte(n >> 8)}).Read(b)
	return b
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testImage is an image built in memory.
type testImage struct {
	Blobs    map[digest.Digest][]byte
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
}

func (img *testImage) add(mediaType string, b []byte) ocispec.Descriptor {
	d := digest.FromBytes(b)
	img.Blobs[d] = b
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// newTestImage builds an OCI image of platform plat whose layers hold the
// files given, one map a layer.
func newTestImage(t testing.TB, plat ocispec.Platform, layers ...map[string][]byte) *testImage {
	t.Helper()
	img := &testImage{Blobs: map[digest.Digest][]byte{}}
	for _, files := range layers {
		blob, diffID := testLayer(t, files, true)
		img.Layers = append(img.Layers, img.add(ocispec.MediaTypeImageLayerGzip, blob))
		img.DiffIDs = append(img.DiffIDs, diffID)
	}
	created := testEpoch
	img.Config = img.add(ocispec.MediaTypeImageConfig, mustJSON(t, ocispec.Image{
		Created:  &created,
		Platform: plat,
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.DiffIDs},
	}))
	img.Manifest = img.add(ocispec.MediaTypeImageManifest, mustJSON(t, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	}))
	p := plat
	img.Manifest.Platform = &p
	return img
}

var (
	linuxAMD64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	linuxARM64 = ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// testMultiImage is a two-platform image: an index over an amd64 and an
// arm64 image.
type testMultiImage struct {
	Blobs map[digest.Digest][]byte
	Index ocispec.Descriptor
	AMD64 *testImage
	ARM64 *testImage
}

func newTestMultiImage(t testing.TB) *testMultiImage {
	t.Helper()
	amd := newTestImage(t, linuxAMD64, map[string][]byte{"etc/arch": []byte("amd64\n")}, map[string][]byte{"bin/x": randomData(5000, 1)})
	arm := newTestImage(t, linuxARM64, map[string][]byte{"etc/arch": []byte("arm64\n")})
	m := &testMultiImage{Blobs: map[digest.Digest][]byte{}, AMD64: amd, ARM64: arm}
	maps.Copy(m.Blobs, amd.Blobs)
	maps.Copy(m.Blobs, arm.Blobs)
	idx := mustJSON(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{amd.Manifest, arm.Manifest},
	})
	d := digest.FromBytes(idx)
	m.Blobs[d] = idx
	m.Index = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: d, Size: int64(len(idx))}
	return m
}

// tarEntry is one entry of a test archive; Link makes a symbolic link.
type tarEntry struct {
	Name string
	Data []byte
	Link string
	Dir  bool
}

func writeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.Name, Mode: 0o444, Size: int64(len(e.Data)), ModTime: testEpoch}
		switch {
		case e.Link != "":
			hdr = &tar.Header{Typeflag: tar.TypeSymlink, Name: e.Name, Linkname: e.Link, Mode: 0o777, ModTime: testEpoch}
		case e.Dir:
			hdr = &tar.Header{Typeflag: tar.TypeDir, Name: e.Name, Mode: 0o755, ModTime: testEpoch}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociEntries lays blobs and an index.json listing manifests out as an OCI
// image layout: oci-layout, the blobs in digest order, then index.json.
func ociEntries(t testing.TB, blobs map[digest.Digest][]byte, manifests ...ocispec.Descriptor) []tarEntry {
	t.Helper()
	entries := []tarEntry{{Name: ocispec.ImageLayoutFile, Data: mustJSON(t, ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})}, {Name: "blobs/", Dir: true}, {Name: "blobs/sha256/", Dir: true}}
	for _, d := range slices.Sorted(maps.Keys(blobs)) {
		entries = append(entries, tarEntry{Name: BlobPath(d), Data: blobs[d]})
	}
	entries = append(entries, tarEntry{Name: ocispec.ImageIndexFile, Data: mustJSON(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	})})
	return entries
}

// named returns desc with the annotations ctr gives an image in index.json.
func named(desc ocispec.Descriptor, name string) ocispec.Descriptor {
	desc.Annotations = map[string]string{AnnotationImageName: name, ocispec.AnnotationRefName: refName(name)}
	return desc
}

// memStore is a content store in memory: an Ingester and a Provider.
type memStore struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	refs  []string
	skip  bool // answer "present already" without reading, for blobs known by digest and present
}

func newMemStore() *memStore { return &memStore{blobs: map[digest.Digest][]byte{}} }

func (s *memStore) Ingest(_ context.Context, b *Blob) error {
	s.mu.Lock()
	s.refs = append(s.refs, b.Ref)
	_, present := s.blobs[b.Digest]
	s.mu.Unlock()
	if s.skip && b.Digest != "" && present {
		return nil
	}
	data, err := io.ReadAll(b)
	if err != nil {
		return err
	}
	if int64(len(data)) != b.Size {
		return fmt.Errorf("ingested %d of %d bytes", len(data), b.Size)
	}
	s.mu.Lock()
	s.blobs[b.Sum()] = data
	s.mu.Unlock()
	return nil
}

func (s *memStore) Open(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// stream hides a reader's Seek, as a pipe would.
type stream struct{ r io.Reader }

func (s stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// modes are the two ways Import reads: a file (twice) and a stream (once).
var modes = []struct {
	name string
	open func([]byte) io.Reader
}{
	{"file", func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{"stream", func(b []byte) io.Reader { return stream{bytes.NewReader(b)} }},
}
