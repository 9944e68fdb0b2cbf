package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/testutil/busybox"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The images the system rows use, built in code into the benchmark's
// temporary directory once per run.
const (
	bigRef = "bench.local/big:1"
	// bigRawBytes is the big layer's file content before compression. With
	// about bigTextShare of it as text (which gzip shrinks about 3.3×) and
	// the rest random bytes (which it cannot shrink), the gzip layer is
	// 87.7 MB and the tar 212 MB, in 3,352 files.
	bigRawBytes  = 200 << 20
	bigTextShare = 0.85
)

// epoch is the time of every file and of the images' configs, so that the
// archives are the same bytes in every run.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// imageFile is an image archive on disk and what the rows check against.
type imageFile struct {
	path    string
	ref     string
	layer   digest.Digest // the (last) gzip layer blob
	chainID digest.Digest // of the whole layer stack: the unpacked snapshot
	gzBytes int64         // the (last) layer's compressed size
	rawSize int64         // the (last) layer's uncompressed tar size
	files   int           // regular files in the (last) layer
	gz      []byte        // the layer, for small images
}

// writeBusybox writes an archive of busybox.Layer() named busybox.Ref to
// dir, with the bench's own archive writer (which also writes the big
// image), keeping the layer's digests for the rows.
func writeBusybox(dir string) (*imageFile, error) {
	layer, diffID, err := busybox.Layer()
	if err != nil {
		return nil, err
	}
	// one layer: its chain ID is its diff ID.
	img := &imageFile{path: filepath.Join(dir, "busybox.tar"), ref: busybox.Ref, layer: digest.FromBytes(layer), chainID: diffID, gzBytes: int64(len(layer)), gz: layer}
	b := blob{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: img.layer, Size: img.gzBytes}, r: bytes.NewReader(layer)}
	if err := writeOCIArchive(img.path, img.ref, []blob{b}, []digest.Digest{diffID}); err != nil {
		return nil, fmt.Errorf("busybox archive: %w", err)
	}
	return img, nil
}

// writeBigImage writes a one-layer image of about bigRawBytes of files
// (some random, some text, of mixed sizes; the same bytes in every run) as
// an OCI archive in dir. The gzip layer goes through a temporary file.
func writeBigImage(ctx context.Context, dir string) (*imageFile, error) {
	layerPath := filepath.Join(dir, "big-layer.tar.gz")
	lf, err := os.Create(layerPath)
	if err != nil {
		return nil, err
	}
	defer os.Remove(layerPath)
	defer lf.Close()
	gzHash, rawHash := sha256.New(), sha256.New()
	gzCount := &countWriter{w: io.MultiWriter(lf, gzHash)}
	bw := bufio.NewWriterSize(gzCount, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	rawCount := &countWriter{w: io.MultiWriter(zw, rawHash)}
	files, err := writeBigTar(ctx, rawCount)
	if err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	img := &imageFile{
		path: filepath.Join(dir, "big.tar"), ref: bigRef,
		layer:   digest.NewDigest(digest.SHA256, gzHash),
		chainID: digest.NewDigest(digest.SHA256, rawHash), // one layer: chain ID = diff ID
		gzBytes: gzCount.n, rawSize: rawCount.n, files: files,
	}
	if _, err := lf.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	layer := blob{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: img.layer, Size: img.gzBytes}, r: lf}
	if err := writeOCIArchive(img.path, img.ref, []blob{layer}, []digest.Digest{img.chainID}); err != nil {
		return nil, err
	}
	return img, nil
}

// writeBigTar writes the big layer's tar: directories d00…d31 of files whose
// sizes are spread log-uniformly between 128 B and 512 KiB, each either
// random bytes or lines of words drawn (Zipf) from a small vocabulary, until
// bigRawBytes.
func writeBigTar(ctx context.Context, w io.Writer) (files int, err error) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := rand.NewChaCha8([32]byte{'b', 'e', 'r', 't', 'h'})
	tw := tar.NewWriter(w)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format, h.Uname, h.Gname = epoch, tar.FormatPAX, "", ""
		return tw.WriteHeader(h)
	}
	const dirs = 32
	for i := range dirs {
		if err := hdr(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("data/d%02d/", i), Mode: 0o755}); err != nil {
			return 0, err
		}
	}
	words := vocabulary(rng)
	zipf := rand.NewZipf(rng, 1.2, 4, uint64(len(words)-1))
	buf := make([]byte, 0, 512<<10+256)
	var total int64
	for total < bigRawBytes {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		size := int64(128 * math.Exp2(rng.Float64()*12)) // 128 B … 512 KiB
		size = min(size, bigRawBytes-total+512)
		buf = buf[:0]
		name := fmt.Sprintf("data/d%02d/f%05d", files%dirs, files)
		if rng.Float64() < bigTextShare {
			name += ".txt"
			for int64(len(buf)) < size {
				for range 12 {
					buf = append(buf, words[zipf.Uint64()]...)
					buf = append(buf, ' ')
				}
				buf[len(buf)-1] = '\n'
			}
			buf = buf[:size]
		} else {
			name += ".bin"
			buf = buf[:size]
			_, _ = noise.Read(buf)
		}
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size}); err != nil {
			return 0, err
		}
		if _, err := tw.Write(buf); err != nil {
			return 0, err
		}
		total += size
		files++
	}
	return files, tw.Close()
}

// vocabulary is 2,048 made-up words of 2 to 11 letters.
func vocabulary(rng *rand.Rand) []string {
	words := make([]string, 2048)
	for i := range words {
		b := make([]byte, 2+rng.IntN(10))
		for j := range b {
			b[j] = "etaoinshrdlucmfwypvbgkjqxz"[min(rng.IntN(26), rng.IntN(26))] // skewed towards common letters
		}
		words[i] = string(b)
	}
	return words
}

// blob is one blob of an archive: its descriptor and its bytes.
type blob struct {
	desc ocispec.Descriptor
	r    io.Reader
}

// writeOCIArchive writes an OCI image layout tar holding one image named
// ref (annotation io.containerd.image.name, as `ctr images export` writes
// it) of the given gzip layers with the given diff IDs.
func writeOCIArchive(path, ref string, layers []blob, diffIDs []digest.Digest) error {
	mustJSON := func(v any) []byte { b, _ := json.Marshal(v); return b }
	created := epoch
	configJSON := mustJSON(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	config := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(configJSON), Size: int64(len(configJSON))}
	var descs []ocispec.Descriptor
	for _, l := range layers {
		descs = append(descs, l.desc)
	}
	manifestJSON := mustJSON(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: descs,
	})
	manifest := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifestJSON), Size: int64(len(manifestJSON))}
	named := manifest
	named.Annotations = map[string]string{"io.containerd.image.name": ref, ocispec.AnnotationRefName: ref[strings.LastIndexByte(ref, ':')+1:]}
	indexJSON := mustJSON(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{named}})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	write := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	bytesBlob := func(d ocispec.Descriptor, b []byte) blob { return blob{desc: d, r: strings.NewReader(string(b))} }
	err = write(ocispec.ImageLayoutFile, int64(len(`{"imageLayoutVersion":"1.0.0"}`)), strings.NewReader(`{"imageLayoutVersion":"1.0.0"}`))
	for _, b := range append(layers, bytesBlob(config, configJSON), bytesBlob(manifest, manifestJSON)) {
		if err == nil {
			err = write("blobs/sha256/"+b.desc.Digest.Encoded(), b.desc.Size, b.r)
		}
	}
	if err == nil {
		err = write("index.json", int64(len(indexJSON)), strings.NewReader(string(indexJSON)))
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// countWriter counts what passes through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
