package local

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/content"
)

// BenchmarkWrite compares committing a blob with copying it to a file and
// fsyncing it, the floor for a durable write.
func BenchmarkWrite(b *testing.B) {
	data := make([]byte, 32<<20)
	rand.Read(data)
	d := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	reader := func() io.Reader { return struct{ io.Reader }{bytes.NewReader(data)} } // 32 KiB writes, as io.Copy

	b.Run("store", func(b *testing.B) {
		s, err := New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			if err := content.WriteBlob(b.Context(), s, fmt.Sprint(i), reader(), d); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := s.Delete(b.Context(), d.Digest); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("copy+fsync", func(b *testing.B) {
		dir := b.TempDir()
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(f, reader()); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
