package imagearchive

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MissingBlobError is a blob that an image needs and that is not there.
// It is of class errdefs.ErrNotFound.
type MissingBlobError struct {
	Desc     ocispec.Descriptor
	Owner    string            // what the blob is: "layer 0 of the linux/arm64 manifest sha256:…"
	Platform *ocispec.Platform // of the manifest it belongs to, when known
	Source   string            // where it was looked for: "the archive" when empty
	Advice   string            // what to do, when known
}

func (e *MissingBlobError) Error() string {
	src := e.Source
	if src == "" {
		src = "the archive"
	}
	s := fmt.Sprintf("blob %s (%s) is not in %s", e.Desc.Digest, e.Owner, src)
	if e.Advice != "" {
		s += "; " + e.Advice
	}
	return s
}

func (e *MissingBlobError) Unwrap() error { return errdefs.ErrNotFound }

// NoMatchError is an index none of whose manifests is of the platform
// asked for. It is of class errdefs.ErrNotFound.
type NoMatchError struct {
	Index     digest.Digest
	Wanted    string
	Available []string
}

func (e *NoMatchError) Error() string {
	s := fmt.Sprintf("index %s has no manifest for platform %s", e.Index, e.Wanted)
	if e.Index == "" {
		s = "the archive has no image for platform " + e.Wanted
	}
	if len(e.Available) > 0 {
		s += fmt.Sprintf(" (it has %s): choose one with --platform %s, or take all with --all-platforms",
			strings.Join(e.Available, ", "), e.Available[0])
	} else {
		s += ": take all with --all-platforms"
	}
	return s
}

func (e *NoMatchError) Unwrap() error { return errdefs.ErrNotFound }

// TooLargeError is an index, manifest or config over MaxDocumentSize. It is
// of class errdefs.ErrInvalidArgument.
type TooLargeError struct {
	Desc ocispec.Descriptor
	Kind Kind
	Size int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s %s is %d bytes, more than the limit of %d MiB for indexes, manifests and configs",
		e.Kind, e.Desc.Digest, e.Size, MaxDocumentSize>>20)
}

func (e *TooLargeError) Unwrap() error { return errdefs.ErrInvalidArgument }

// DigestMismatchError is a blob whose bytes do not have the digest that
// names it. It is of class errdefs.ErrInvalidArgument.
type DigestMismatchError struct {
	Expected digest.Digest
	Got      digest.Digest
	Name     string // the archive member or what the blob is
}

func (e *DigestMismatchError) Error() string {
	s := "blob " + e.Expected.String()
	if e.Name != "" && !strings.Contains(e.Name, e.Expected.Encoded()) {
		s += " (" + e.Name + ")"
	}
	return s + ": its bytes have digest " + e.Got.String() + " (corrupt or altered)"
}

func (e *DigestMismatchError) Unwrap() error { return errdefs.ErrInvalidArgument }

// SizeMismatchError is a blob whose size is not the one its descriptor
// gives. It is of class errdefs.ErrInvalidArgument.
type SizeMismatchError struct {
	Desc  ocispec.Descriptor
	Owner string
	Size  int64
}

func (e *SizeMismatchError) Error() string {
	return fmt.Sprintf("blob %s (%s) is %d bytes, but its descriptor says %d", e.Desc.Digest, e.Owner, e.Size, e.Desc.Size)
}

func (e *SizeMismatchError) Unwrap() error { return errdefs.ErrInvalidArgument }
