package imagearchive

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// countingReader counts what Import reads.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seekingCounter keeps the Seek of the reader it counts.
type seekingCounter struct {
	*countingReader
	s io.Seeker
}

func (s seekingCounter) Seek(off int64, whence int) (int64, error) { return s.s.Seek(off, whence) }

// discard is an ingester that reads and drops every blob, counting bytes.
type discard struct{ n int64 }

func (d *discard) Ingest(_ context.Context, b *Blob) error {
	n, err := io.Copy(io.Discard, b)
	d.n += n
	return err
}

// FuzzImport: no input makes Import panic, and what it reads and hands to
// the ingester is bounded by the input: each byte read at most twice (a
// file is read twice), each blob handed over once, plus the documents
// made for docker archives.
func FuzzImport(f *testing.F) {
	img := newTestImage(f, linuxAMD64, map[string][]byte{"etc/motd": []byte("hi")})
	f.Add(writeTar(f, ociEntries(f, img.Blobs, named(img.Manifest, "example.com/a:1"))))
	m := newTestMultiImage(f)
	f.Add(writeTar(f, ociEntries(f, m.Blobs, named(m.Index, "example.com/m:1"))))
	f.Add(writeTar(f, []tarEntry{
		{Name: "manifest.json", Data: []byte(`[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l/layer.tar","x"]}]`)},
		{Name: "c.json", Data: []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":[]}}`)},
		{Name: "l/layer.tar", Data: []byte("layer")},
		{Name: "x", Link: "l/layer.tar"},
	}))
	f.Add(writeTar(f, []tarEntry{{Name: "oci-layout", Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {Name: "index.json", Data: []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:../..","size":1}]}`)}}))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, seek := range []bool{true, false} {
			cr := &countingReader{r: bytes.NewReader(data)}
			var r io.Reader = cr
			if seek {
				r = seekingCounter{cr, cr.r.(io.Seeker)}
			}
			d := &discard{}
			opts := Options{Platform: platforms.Only(ocispec.Platform{OS: "linux", Architecture: "amd64"}), PlatformName: "linux/amd64"}
			if len(data)%2 == 1 {
				opts = Options{AllPlatforms: true, IndexName: "x"}
			}
			res, err := Import(context.Background(), r, d, opts)
			if cr.n > 2*int64(len(data))+64<<10 {
				t.Fatalf("read %d bytes of a %d-byte input", cr.n, len(data))
			}
			gzipped := len(data) > 1 && data[0] == 0x1f && data[1] == 0x8b
			if !gzipped && d.n > int64(len(data))+2*MaxDocumentSize {
				t.Fatalf("ingested %d bytes of a %d-byte input", d.n, len(data))
			}
			if err == nil && res == nil {
				t.Fatal("no result and no error")
			}
		}
	})
}
