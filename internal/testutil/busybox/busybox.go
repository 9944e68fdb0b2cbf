// Package busybox builds a container image from the host's static busybox
// (Debian's busybox-static), in code, with no registry: a one-layer OCI image
// archive that `ctr images import`, `berth images import` and `docker load`
// accept. Tests and the README's demo use it.
//
// Invariant: the archive is deterministic for a given busybox binary (fixed
// times, sorted entries), so its digests are stable.
package busybox

import (
	"archive/tar"
	"bytes"
	_ "crypto/sha256" // registers sha256 for go-digest
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Ref is the name the image is imported under.
const Ref = "docker.io/library/busybox:latest"

// Commands are linked to /bin/busybox in the image.
var Commands = []string{"sh", "echo", "ls", "sleep", "true", "false", "cat", "ps", "readlink", "tty", "id", "env", "stat", "test", "wc", "head", "dd", "mkdir", "touch", "rm", "hostname"}

var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Binary finds the static busybox.
func Binary() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: install busybox-static")
	}
	return p, nil
}

// Layer returns the gzipped layer and its diff ID.
func Layer() ([]byte, digest.Digest, error) {
	p, err := Binary()
	if err != nil {
		return nil, "", err
	}
	bin, err := os.ReadFile(p)
	if err != nil {
		return nil, "", err
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	add := func(h *tar.Header, data []byte) error {
		h.ModTime, h.Format = epoch, tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "var"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := add(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode}, nil); err != nil {
			return nil, "", err
		}
	}
	if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}, bin); err != nil {
		return nil, "", err
	}
	for _, c := range Commands {
		if err := add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + c, Linkname: "busybox", Mode: 0o777}, nil); err != nil {
			return nil, "", err
		}
	}
	for _, f := range []struct{ name, body string }{
		{"etc/group", "root:x:0:\n"},
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
	} {
		if err := add(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}, []byte(f.body)); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest.FromBytes(raw.Bytes()), nil
}

// WriteArchive writes the busybox image as an OCI image layout tar, with a
// docker manifest.json beside it, to path.
func WriteArchive(path string) error {
	layer, diffID, err := Layer()
	if err != nil {
		return err
	}
	blobs := map[digest.Digest][]byte{}
	add := func(mt string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		blobs[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	mustJSON := func(v any) []byte { b, _ := json.Marshal(v); return b }
	created := epoch
	layerDesc := add(ocispec.MediaTypeImageLayerGzip, layer)
	config := add(ocispec.MediaTypeImageConfig, mustJSON(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}))
	manifest := add(ocispec.MediaTypeImageManifest, mustJSON(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: []ocispec.Descriptor{layerDesc},
	}))
	manifest.Annotations = map[string]string{"io.containerd.image.name": Ref, ocispec.AnnotationRefName: "latest"}
	index := mustJSON(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{manifest}})
	dockerManifest := mustJSON([]map[string]any{{
		"Config": "blobs/sha256/" + config.Digest.Encoded(), "RepoTags": []string{"busybox:latest"},
		"Layers": []string{"blobs/sha256/" + layerDesc.Digest.Encoded()},
	}})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	write := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	err = write(ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for _, d := range []ocispec.Descriptor{layerDesc, config, manifest} {
		if err == nil {
			err = write("blobs/sha256/"+d.Digest.Encoded(), blobs[d.Digest])
		}
	}
	if err == nil {
		err = write("index.json", index)
	}
	if err == nil {
		err = write("manifest.json", dockerManifest)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
