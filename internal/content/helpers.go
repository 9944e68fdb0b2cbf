package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ValidateDigest accepts only "sha256:" followed by 64 lowercase hex digits,
// the one form that is safe to turn into a path. Anything else is
// errdefs.ErrInvalidArgument.
func ValidateDigest(d digest.Digest) error {
	s := string(d)
	const prefix = "sha256:"
	if len(s) != len(prefix)+64 || s[:len(prefix)] != prefix {
		return invalidDigest(s)
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return invalidDigest(s)
		}
	}
	return nil
}

func invalidDigest(s string) error {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Errorf("digest %q: not sha256 with 64 lowercase hex digits: %w", s, errdefs.ErrInvalidArgument)
}

// ReadBlob reads the whole blob desc and checks it against desc.Digest and,
// when not zero, desc.Size. A blob larger than limit bytes is refused with
// errdefs.ErrInvalidArgument before anything is read; limit <= 0 means no
// bound, for callers that trust the size.
func ReadBlob(ctx context.Context, p Provider, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if limit > 0 && desc.Size > limit {
		return nil, fmt.Errorf("content %s: size %d exceeds limit %d: %w", desc.Digest, desc.Size, limit, errdefs.ErrInvalidArgument)
	}
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	size := ra.Size()
	if limit > 0 && size > limit {
		return nil, fmt.Errorf("content %s: size %d exceeds limit %d: %w", desc.Digest, size, limit, errdefs.ErrInvalidArgument)
	}
	if desc.Size != 0 && size != desc.Size {
		return nil, fmt.Errorf("content %s: size %d, expected %d: %w", desc.Digest, size, desc.Size, errdefs.ErrFailedPrecondition)
	}
	b := make([]byte, size)
	n, err := ra.ReadAt(b, 0)
	if errors.Is(err, io.EOF) && int64(n) == size {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("content %s: read: %w", desc.Digest, err)
	}
	if got := digest.FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("content %s: read data has digest %s: %w", desc.Digest, got, errdefs.ErrFailedPrecondition)
	}
	return b, nil
}

// WriteBlob writes r as the blob desc through the ingest ref, resuming the
// ingest if it was started before. A blob that is present already is a
// success.
func WriteBlob(ctx context.Context, i Ingester, ref string, r io.Reader, desc ocispec.Descriptor, opts ...Opt) error {
	w, err := OpenWriter(ctx, i, WithRef(ref), WithDescriptor(desc))
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	defer w.Close()
	err = Copy(ctx, w, r, desc.Size, desc.Digest, opts...)
	if errdefs.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// OpenWriter opens a writer, waiting while another writer holds the ref
// (errdefs.ErrUnavailable) until it is released or ctx is done.
func OpenWriter(ctx context.Context, i Ingester, opts ...WriterOpt) (Writer, error) {
	wait := time.Millisecond
	for {
		w, err := i.Writer(ctx, opts...)
		if err == nil || !errdefs.IsUnavailable(err) {
			return w, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %w", err, ctx.Err())
		case <-t.C:
		}
		if wait < 500*time.Millisecond {
			wait *= 2
		}
	}
}

// Copy writes r to w from w's current offset and commits it with size and
// expected. When the ingest was resumed, the part of r already written is
// skipped: by seeking if r is an io.Seeker, by reading it otherwise.
func Copy(ctx context.Context, w Writer, r io.Reader, size int64, expected digest.Digest, opts ...Opt) error {
	st, err := w.Status()
	if err != nil {
		return err
	}
	if st.Offset > 0 {
		if err := skip(r, st.Offset); err != nil {
			return fmt.Errorf("ingest %q: skip to offset %d: %w", st.Ref, st.Offset, err)
		}
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return fmt.Errorf("ingest %q: copy: %w", st.Ref, err)
	}
	if size > 0 && st.Offset+n < size {
		return fmt.Errorf("ingest %q: read %d of %d bytes: %w", st.Ref, st.Offset+n, size, io.ErrUnexpectedEOF)
	}
	return w.Commit(ctx, size, expected, opts...)
}

func skip(r io.Reader, off int64) error {
	if s, ok := r.(io.Seeker); ok {
		_, err := s.Seek(off, io.SeekStart)
		return err
	}
	n, err := io.CopyN(io.Discard, r, off)
	if err == io.EOF && n < off {
		err = io.ErrUnexpectedEOF
	}
	return err
}
