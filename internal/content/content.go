// Package content defines berth's content-addressed store: immutable blobs
// named by their digest, written through resumable ingests named by a ref.
//
// The semantics follow containerd's content store, so that the content
// service can expose any Store unchanged:
//
//   - A blob is visible only once a Writer commits it, after its size and
//     digest were verified; a visible blob never changes. Commit either makes
//     the whole blob visible or nothing.
//   - A ref names one ingest. At most one Writer holds a ref at a time; a
//     second one is refused with errdefs.ErrUnavailable. An ingest outlives
//     its Writer: opening a Writer on the same ref resumes at the end of the
//     data already written.
//   - Digests are sha256 only and are validated (ValidateDigest) before they
//     are used to name anything; refs are free strings that implementations
//     must never use as path components.
//   - Errors carry errdefs classes: ErrNotFound for missing blobs and
//     ingests, ErrAlreadyExists when a blob is present already,
//     ErrFailedPrecondition for a commit whose size or digest does not
//     match, ErrInvalidArgument for malformed digests.
package content

import (
	"context"
	"io"
	"time"

	"github.com/berth-dev/berth/internal/filters"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time
	UpdatedAt time.Time
	Labels    map[string]string
}

// Status describes an ingest in progress.
type Status struct {
	Ref       string
	Offset    int64
	Total     int64
	Expected  digest.Digest
	StartedAt time.Time
	UpdatedAt time.Time
}

// ReaderAt reads a committed blob at random offsets.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Provider opens committed blobs for reading.
type Provider interface {
	// ReaderAt opens the blob named by desc.Digest.
	ReaderAt(ctx context.Context, desc ocispec.Descriptor) (ReaderAt, error)
}

// Ingester opens writers for new content.
type Ingester interface {
	// Writer opens the ingest named by the WithRef option, resuming it when
	// it exists. If WithDescriptor names a blob already present, it fails
	// with errdefs.ErrAlreadyExists.
	Writer(ctx context.Context, opts ...WriterOpt) (Writer, error)
}

// WalkFunc is called for each blob by Walk; an error stops the walk and is
// returned by it.
type WalkFunc func(Info) error

// Manager reads and updates committed blobs.
type Manager interface {
	// Info describes the blob dgst.
	Info(ctx context.Context, dgst digest.Digest) (Info, error)
	// Update replaces the mutable fields of a blob: "labels" (all labels)
	// or "labels.<key>" (one label; an empty value removes it). With no
	// fieldpaths all labels are replaced.
	Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error)
	// Walk calls fn for each blob matching any of the filters (all blobs
	// when none is given). Fields: digest, labels.<key>.
	Walk(ctx context.Context, fn WalkFunc, filters ...string) error
	// Delete removes the blob dgst.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// IngestManager inspects and aborts ingests.
type IngestManager interface {
	// Status describes the ingest ref.
	Status(ctx context.Context, ref string) (Status, error)
	// ListStatuses lists the ingests matching any of the filters. Fields: ref.
	ListStatuses(ctx context.Context, filters ...string) ([]Status, error)
	// Abort removes the ingest ref and its data.
	Abort(ctx context.Context, ref string) error
}

// Store is a complete content store.
type Store interface {
	Manager
	Provider
	IngestManager
	Ingester
}

// Writer writes one ingest. Writes are appended at Status().Offset; the
// data is durable only after a successful Commit.
type Writer interface {
	// Close releases the ref, leaving the ingest in place to be resumed.
	// It is safe after Commit.
	io.WriteCloser
	// Digest is the digest of everything written so far.
	Digest() digest.Digest
	// Commit verifies the data against size (when > 0) and expected (when
	// not empty) and makes it visible as a blob. The writer is closed
	// afterwards, whatever the outcome.
	Commit(ctx context.Context, size int64, expected digest.Digest, opts ...Opt) error
	// Status describes the ingest as this writer sees it.
	Status() (Status, error)
	// Truncate discards the data written; only size 0 is supported.
	Truncate(size int64) error
}

// Opt sets fields of the Info of a blob being committed.
type Opt func(*Info) error

// WithLabels sets the labels of a committed blob.
func WithLabels(labels map[string]string) Opt {
	return func(info *Info) error {
		info.Labels = labels
		return nil
	}
}

// WriterOpts are the settings of Ingester.Writer.
type WriterOpts struct {
	Ref  string
	Desc ocispec.Descriptor
}

// WriterOpt sets an option of Ingester.Writer.
type WriterOpt func(*WriterOpts) error

// WithRef names the ingest; it is required.
func WithRef(ref string) WriterOpt {
	return func(o *WriterOpts) error {
		o.Ref = ref
		return nil
	}
}

// WithDescriptor gives the expected size and digest of the content, when
// known.
func WithDescriptor(desc ocispec.Descriptor) WriterOpt {
	return func(o *WriterOpts) error {
		o.Desc = desc
		return nil
	}
}

// AdaptInfo exposes an Info to filters: digest and labels.<key>. Size is
// not filterable, as in containerd.
func AdaptInfo(info Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "digest":
			return info.Digest.String(), true
		case "labels":
			return filters.LabelField(info.Labels, fieldpath[1:])
		}
		return "", false
	})
}

// AdaptStatus exposes a Status to filters: ref.
func AdaptStatus(st Status) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 1 && fieldpath[0] == "ref" {
			return st.Ref, true
		}
		return "", false
	})
}
