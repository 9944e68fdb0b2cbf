package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ociEpoch stamps every tar entry, so that the same files give the same
// digests.
var ociEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// ociLayer returns a gzipped layer tar holding files (paths relative to the
// root, parent directories implied; a path ending in "/" is a directory)
// and the digest of the uncompressed tar, its diff ID.
func ociLayer(t testing.TB, files map[string][]byte) (layer []byte, diffID digest.Digest) {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	write := func(hdr *tar.Header, data []byte) {
		hdr.ModTime, hdr.Format = ociEpoch, tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	written := map[string]bool{}
	var mkdir func(dir string)
	mkdir = func(dir string) {
		if dir == "." || written[dir] {
			return
		}
		mkdir(path.Dir(dir))
		written[dir] = true
		write(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}, nil)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		clean := strings.TrimPrefix(path.Clean("/"+name), "/")
		if strings.HasSuffix(name, "/") {
			mkdir(clean)
			continue
		}
		mkdir(path.Dir(clean))
		data := files[name]
		write(&tar.Header{Typeflag: tar.TypeReg, Name: clean, Mode: 0o644, Size: int64(len(data))}, data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // a zero header time keeps the bytes stable
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes(), digest.FromBytes(raw.Bytes())
}

// ociImage is an image built in memory: its blobs by digest and the
// descriptors of its parts.
type ociImage struct {
	Blobs    map[digest.Digest][]byte
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
}

// newOCIImage builds a one-layer linux image of the host's architecture from
// a gzipped layer and its diff ID.
func newOCIImage(t testing.TB, layer []byte, diffID digest.Digest) *ociImage {
	t.Helper()
	img := &ociImage{Blobs: map[digest.Digest][]byte{}, DiffIDs: []digest.Digest{diffID}}
	add := func(mediaType string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		img.Blobs[d] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	img.Layers = []ocispec.Descriptor{add(ocispec.MediaTypeImageLayerGzip, layer)}
	created := ociEpoch
	img.Config = add(ocispec.MediaTypeImageConfig, mustJSON(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.DiffIDs},
	}))
	img.Manifest = add(ocispec.MediaTypeImageManifest, mustJSON(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	}))
	return img
}

// writeOCIArchive writes img as an OCI image layout tar at dst, the form
// `ctr images import` reads: oci-layout, the blobs, then index.json naming
// the manifest refName (annotation io.containerd.image.name) with the tag
// of refName as its OCI ref name.
func writeOCIArchive(t testing.TB, img *ociImage, refName, dst string) {
	t.Helper()
	tag := "latest"
	if i := strings.LastIndex(refName, ":"); i > strings.LastIndex(refName, "/") {
		tag = refName[i+1:]
	}
	m := img.Manifest
	m.Annotations = map[string]string{
		"io.containerd.image.name": refName,
		ocispec.AnnotationRefName:  tag,
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{m},
	})
	if err != nil {
		t.Fatal(err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(name string, b []byte) {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: int64(len(b)), ModTime: ociEpoch}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	put(ocispec.ImageLayoutFile, layout)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "blobs/sha256/", Mode: 0o755, ModTime: ociEpoch}); err != nil {
		t.Fatal(err)
	}
	for _, d := range slices.Sorted(maps.Keys(img.Blobs)) {
		put("blobs/sha256/"+d.Encoded(), img.Blobs[d])
	}
	put("index.json", index)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// buildOCIArchive builds a one-layer image whose root file system holds
// files and writes it as an OCI archive named refName in a temporary
// directory. It returns the tar's path and the manifest's digest.
func buildOCIArchive(t testing.TB, files map[string][]byte, refName string) (tarPath string, manifestDigest digest.Digest) {
	t.Helper()
	layer, diffID := ociLayer(t, files)
	img := newOCIImage(t, layer, diffID)
	tarPath = filepath.Join(t.TempDir(), "image.tar")
	writeOCIArchive(t, img, refName, tarPath)
	return tarPath, img.Manifest.Digest
}

// ociArchiveBlobs reads the blobs of an OCI archive back: what the content
// store should hold after an import (index.json included).
func ociArchiveBlobs(t testing.TB, tarPath string) map[digest.Digest][]byte {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[digest.Digest][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Name == ocispec.ImageLayoutFile {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		blobs[digest.FromBytes(b)] = b
	}
	return blobs
}
