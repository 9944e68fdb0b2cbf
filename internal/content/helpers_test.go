package content_test

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/content/local"
)

var validDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestValidateDigest(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct {
		d  digest.Digest
		ok bool
	}{
		{digest.FromString("x"), true},
		{digest.Digest("sha256:" + hex), true},
		{"", false},
		{"sha256:", false},
		{"sha256:../..", false},
		{digest.Digest("sha256:" + hex[:63]), false},
		{digest.Digest("sha256:" + hex + "0"), false},
		{digest.Digest("sha256:" + strings.ToUpper(hex)), false},
		{digest.Digest("sha256:" + hex[:60] + "../a"), false},
		{digest.Digest("sha512:" + hex + hex), false},
		{digest.Digest("sha384:" + hex[:48] + hex[:48]), false},
		{digest.Digest("sha256+b64:" + hex), false},
		{digest.Digest(" sha256:" + hex[:63]), false},
		{digest.Digest("sha256:" + hex[:63] + "\x00"), false},
	} {
		err := content.ValidateDigest(tc.d)
		if tc.ok != (err == nil) || (err != nil && !errdefs.IsInvalidArgument(err)) {
			t.Errorf("ValidateDigest(%q) = %v, want ok=%v", tc.d, err, tc.ok)
		}
	}
}

func FuzzValidateDigest(f *testing.F) {
	for _, s := range []string{"", "sha256:../..", digest.FromString("x").String(), "sha256:" + strings.Repeat("A", 64), "sha512:ab"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := digest.Digest(s)
		err := content.ValidateDigest(d)
		if (err == nil) != validDigest.MatchString(s) {
			t.Fatalf("ValidateDigest(%q) = %v", s, err)
		}
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ValidateDigest(%q) = %v, want invalid argument", s, err)
			}
			return
		}
		// An accepted digest names exactly one file directly in blobs/sha256.
		dir := filepath.Join("/root", "blobs", "sha256")
		p := filepath.Join(dir, d.Encoded())
		if filepath.Dir(p) != dir || filepath.Base(p) != d.Encoded() || d.Validate() != nil {
			t.Fatalf("accepted digest %q maps to %q", s, p)
		}
	})
}

func newStore(t *testing.T) *local.Store {
	t.Helper()
	s, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReadBlob(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	b := []byte("manifest")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(ctx, s, "m", bytes.NewReader(b), desc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		desc  ocispec.Descriptor
		limit int64
		is    func(error) bool
	}{
		{"ok", desc, 0, nil},
		{"within limit", desc, int64(len(b)), nil},
		{"size unknown", ocispec.Descriptor{Digest: desc.Digest}, 100, nil},
		{"over limit", desc, int64(len(b)) - 1, errdefs.IsInvalidArgument},
		{"over limit, size unknown", ocispec.Descriptor{Digest: desc.Digest}, 3, errdefs.IsInvalidArgument},
		{"wrong size", ocispec.Descriptor{Digest: desc.Digest, Size: 3}, 0, errdefs.IsFailedPrecondition},
		{"missing", ocispec.Descriptor{Digest: digest.FromString("nope")}, 0, errdefs.IsNotFound},
		{"bad digest", ocispec.Descriptor{Digest: "sha256:../.."}, 0, errdefs.IsInvalidArgument},
	} {
		got, err := content.ReadBlob(ctx, s, tc.desc, tc.limit)
		if tc.is == nil {
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("%s: %q, %v", tc.name, got, err)
			}
		} else if err == nil || !tc.is(err) {
			t.Errorf("%s: error %v", tc.name, err)
		}
	}
}

func TestWriteBlobExisting(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	b := []byte("twice")
	desc := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
	for range 2 {
		if err := content.WriteBlob(ctx, s, "w", bytes.NewReader(b), desc); err != nil {
			t.Fatal(err)
		}
	}
	// Short input is an error, and nothing is committed.
	short := ocispec.Descriptor{Digest: digest.FromString("longer"), Size: 6}
	if err := content.WriteBlob(ctx, s, "short", strings.NewReader("lon"), short); err == nil {
		t.Fatal("write blob of short input succeeded")
	}
	if _, err := s.Info(ctx, short.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("info after short write: %v", err)
	}
}

func TestOpenWriterWaits(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	w, err := s.Writer(ctx, content.WithRef("busy"))
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, func() { w.Close() })
	w2, err := content.OpenWriter(ctx, s, content.WithRef("busy"))
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()

	w3, err := s.Writer(ctx, content.WithRef("busy"))
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := content.OpenWriter(short, s, content.WithRef("busy")); !errdefs.IsUnavailable(err) {
		t.Fatalf("open writer on a held ref with a deadline: %v, want unavailable", err)
	}
}
