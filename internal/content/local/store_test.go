package local

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/content/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, "local", func(t *testing.T, root string) (content.Store, func() error) {
		s, err := New(root, WithLabelStore(NewMemoryLabels()))
		if err != nil {
			t.Fatal(err)
		}
		return s, nil
	}, testsuite.SupportsLabels())
}

func newStore(t *testing.T, opts ...Option) (*Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	s, err := New(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

func TestWithoutLabelStore(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	b := []byte("no labels")
	d := digest.FromBytes(b)
	desc := ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	if err := content.WriteBlob(ctx, s, "x", bytes.NewReader(b), desc, content.WithLabels(map[string]string{"a": "b"})); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, d)
	if err != nil || info.Labels != nil {
		t.Fatalf("info = %+v, %v; want no labels", info, err)
	}
	if _, err := s.Update(ctx, content.Info{Digest: d, Labels: map[string]string{"a": "b"}}); !errdefs.IsNotImplemented(err) {
		t.Fatalf("update: %v, want not implemented", err)
	}
}

// TestLayout checks the files the package doc promises.
func TestLayout(t *testing.T) {
	s, root := newStore(t)
	ctx := t.Context()
	b := []byte("layout")
	d := digest.FromBytes(b)
	w, err := s.Writer(ctx, content.WithRef("layout"), content.WithDescriptor(ocispec.Descriptor{Digest: d, Size: 6}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:3]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dir := s.ingestDir("layout")
	for name, want := range map[string]string{"ref": "layout", "data": "lay", "total": "6", "expected": d.String()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("ingest file %s = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"startedat", "updatedat"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
	if err := content.WriteBlob(ctx, s, "layout", bytes.NewReader(b), ocispec.Descriptor{Digest: d, Size: 6}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "blobs", "sha256", d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("blob mode = %v, want 0444", fi.Mode())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("ingest directory after commit: %v", err)
	}
}

// TestExpectedFromWriter checks that the digest given to Writer is verified
// by a Commit that names none.
func TestExpectedFromWriter(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	w, err := s.Writer(ctx, content.WithRef("x"), content.WithDescriptor(ocispec.Descriptor{Digest: digest.FromString("other")}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("this")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, 0, ""); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit: %v, want failed precondition", err)
	}
}

// TestIncompleteIngest checks that an ingest left half-created by a crash
// is started anew rather than blocking its ref.
func TestIncompleteIngest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(dir string) error
	}{
		{"no data", func(dir string) error { return os.Remove(filepath.Join(dir, "data")) }},
		{"no startedat", func(dir string) error { return os.Remove(filepath.Join(dir, "startedat")) }},
		{"bad updatedat", func(dir string) error { return os.WriteFile(filepath.Join(dir, "updatedat"), []byte("2024-"), 0o600) }},
		{"bad total", func(dir string) error { return os.WriteFile(filepath.Join(dir, "total"), []byte("x"), 0o600) }},
		{"empty dir", func(dir string) error {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			return os.Mkdir(dir, 0o700)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t)
			ctx := t.Context()
			w, err := s.Writer(ctx, content.WithRef("r"), content.WithDescriptor(ocispec.Descriptor{Size: 10}))
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("12345"))
			w.Close()
			if err := tc.corrupt(s.ingestDir("r")); err != nil {
				t.Fatal(err)
			}
			if sts, err := s.ListStatuses(ctx); err != nil || len(sts) != 0 {
				t.Errorf("statuses = %v, %v; want none", sts, err)
			}
			w, err = s.Writer(ctx, content.WithRef("r"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if st, _ := w.Status(); st.Offset != 0 {
				t.Errorf("offset = %d, want 0", st.Offset)
			}
		})
	}
}

// TestHostileRefs checks that refs, which are free strings, never name a
// path: everything the store writes stays under its root.
func TestHostileRefs(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	s, err := New(root, WithLabelStore(NewMemoryLabels()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	refs := []string{
		"../../x", "../x", "..", ".", "/abs", "/", "a/../../../b", "ingest/../../x",
		"blobs/sha256/" + strings.Repeat("0", 64), "x\x00y", "\n", "ref with spaces",
		strings.Repeat("a", 1<<16), strings.Repeat("../", 2000),
	}
	for i, ref := range refs {
		b := []byte(ref + "-data")
		w, err := s.Writer(ctx, content.WithRef(ref))
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := w.Commit(ctx, int64(len(b)), digest.FromBytes(b)); err != nil {
				t.Fatalf("commit %d: %v", i, err)
			}
			continue
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		st, err := s.Status(ctx, ref)
		if err != nil || st.Ref != ref || st.Offset != int64(len(b)) {
			t.Fatalf("status %d = %+v, %v", i, st, err)
		}
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil || len(sts) != len(refs)/2 {
		t.Fatalf("statuses = %d, %v; want %d", len(sts), err, len(refs)/2)
	}
	for i, ref := range refs {
		if i%2 == 1 {
			if err := s.Abort(ctx, ref); err != nil {
				t.Fatalf("abort %d: %v", i, err)
			}
		}
	}
	entries, err := os.ReadDir(parent)
	if err != nil || len(entries) != 1 || entries[0].Name() != "root" {
		t.Fatalf("beside the root: %v, %v", entries, err)
	}
	if entries, err := os.ReadDir(root); err != nil || len(entries) != 2 {
		t.Fatalf("in the root: %v, %v", entries, err)
	}
	if entries, err := os.ReadDir(filepath.Join(root, "ingest")); err != nil || len(entries) != 0 {
		t.Fatalf("ingests left: %v, %v", entries, err)
	}
	var n int
	if err := s.Walk(ctx, func(content.Info) error { n++; return nil }); err != nil || n != (len(refs)+1)/2 {
		t.Fatalf("walk: %d blobs, %v; want %d", n, err, (len(refs)+1)/2)
	}
}
