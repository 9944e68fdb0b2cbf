package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/content"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func contentCommand() *cli.Command {
	return &cli.Command{
		Name:  "content",
		Usage: "manage the content store: blobs named by their digest, and ingests",
		Description: `Blobs are shared on disk by all namespaces but visible only in the namespaces that wrote
	them. A blob nothing refers to (no image, no gc.ref label of another blob, no lease, no
	containerd.io/gc.root label) is removed by the garbage collector.`,
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Aliases:   []string{"list"},
				Usage:     "list blobs: DIGEST SIZE AGE LABELS",
				ArgsUsage: "[FILTER…]",
				Description: `Filters use containerd's filter language over digest and labels, e.g.
	labels."containerd.io/gc.root" or digest==sha256:….`,
				Flags:  []cli.Flag{quietFlag(), jsonFlag()},
				Action: contentList,
			},
			{
				Name:      "get",
				Aliases:   []string{"cat"},
				Usage:     "write a blob's bytes to stdout (verified against its digest)",
				ArgsUsage: "DIGEST",
				Action:    contentGet,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "remove blobs from the namespace",
				ArgsUsage: "DIGEST [DIGEST…]",
				Action:    contentRemove,
			},
			{
				Name:      "label",
				Usage:     "set labels of a blob (KEY= removes one); without labels, print them",
				ArgsUsage: "DIGEST [KEY=VALUE…]",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    contentLabel,
			},
			{
				Name:      "ingest",
				Usage:     "write stdin as a blob through the ingest REF and print its digest",
				ArgsUsage: "REF",
				Description: `An ingest interrupted (say, berthd restarted) resumes where it stopped when run again
	with the same REF and the same data. With --expected-digest, a blob already present is not
	sent again, and data with another digest is refused.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "expected-digest", Usage: "refuse data whose digest is not `DIGEST`"},
					&cli.Int64Flag{Name: "expected-size", Usage: "refuse data that is not `BYTES` long"},
				},
				Action: contentIngest,
			},
			{
				Name:      "active",
				Usage:     "list ingests in progress: REF SIZE TOTAL STARTED UPDATED",
				ArgsUsage: "[FILTER…]",
				Flags:     []cli.Flag{quietFlag(), jsonFlag()},
				Action:    contentActive,
			},
		},
	}
}

// contentObject names a blob in the client's namespace.
func contentObject(cl *client, dgst string) object { return cl.object("content", dgst) }

// blobView is a blob as --json prints it.
type blobView struct {
	Digest    string            `json:"digest"`
	Size      int64             `json:"size"`
	CreatedAt *time.Time        `json:"created_at,omitempty"`
	UpdatedAt *time.Time        `json:"updated_at,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// validDigestArgs checks the DIGEST arguments before any request.
func validDigestArgs(c *cli.Context, args []string) error {
	for _, a := range args {
		if err := content.ValidateDigest(digest.Digest(a)); err != nil {
			return usagef(c, "invalid digest %q: expected sha256: and 64 lowercase hex digits", a)
		}
	}
	return nil
}

// contentList streams Content.List.
func contentList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	stream, err := contentapi.NewContentClient(cl.conn).List(ctx, &contentapi.ListContentRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "list", cl.object("content", ""))
	}
	var views []blobView
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return cl.fail(err, "list", cl.object("content", ""))
		}
		for _, info := range resp.GetInfo() {
			views = append(views, blobView{
				Digest: info.GetDigest(), Size: info.GetSize(), Labels: info.GetLabels(),
				CreatedAt: jsonTime(info.GetCreatedAt()), UpdatedAt: jsonTime(info.GetUpdatedAt()),
			})
		}
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		if views == nil {
			views = []blobView{}
		}
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, v := range views {
			fmt.Fprintln(w, v.Digest)
		}
		return nil
	}
	t := newTable(w, "DIGEST", "SIZE", "AGE", "LABELS")
	now := time.Now()
	for _, v := range views {
		age := ""
		if v.CreatedAt != nil {
			age = ageOf(now.Sub(*v.CreatedAt))
		}
		t.row(v.Digest, byteSize(v.Size), age, formatLabels(v.Labels))
	}
	return t.flush()
}

// ageOf renders a duration as docker and ctr do: "2 minutes", "About an hour".
func ageOf(d time.Duration) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch s := int(d.Seconds()); {
	case s < 1:
		return "Less than a second"
	case s < 60:
		return plural(s, "second")
	case d < 60*time.Minute:
		if m := int(d.Minutes()); m > 1 {
			return plural(m, "minute")
		}
		return "About a minute"
	case d < 48*time.Hour:
		if h := int(d.Hours() + 0.5); h > 1 {
			return plural(h, "hour")
		}
		return "About an hour"
	case d < 14*24*time.Hour:
		return plural(int(d.Hours()/24), "day")
	case d < 60*24*time.Hour:
		return plural(int(d.Hours()/24/7), "week")
	case d < 2*365*24*time.Hour:
		return plural(int(d.Hours()/24/30), "month")
	}
	return plural(int(d.Hours()/24/365), "year")
}

// byteSize renders bytes in binary units: "512 B", "4.0 KiB", "1.9 MiB".
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// contentGet calls Content.Info, then Content.Read, and copies the bytes to stdout.
func contentGet(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one DIGEST")
	}
	dgst := c.Args().First()
	if err := validDigestArgs(c, []string{dgst}); err != nil {
		return err
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := contentapi.NewContentClient(cl.conn)
	info, err := api.Info(ctx, &contentapi.InfoRequest{Digest: dgst})
	if err != nil {
		return cl.fail(err, "get", contentObject(cl, dgst))
	}
	desc := ocispec.Descriptor{Digest: digest.Digest(dgst), Size: info.GetInfo().GetSize()}
	rc, err := contentReader{api: api}.Open(ctx, desc)
	if err != nil {
		return cl.fail(err, "read", contentObject(cl, dgst))
	}
	defer rc.Close()
	w := bufio.NewWriterSize(c.App.Writer, 1<<20)
	verifier := desc.Digest.Verifier()
	n, err := io.Copy(io.MultiWriter(w, verifier), rc)
	if err != nil {
		return cl.fail(err, "read", contentObject(cl, dgst))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if n != desc.Size || !verifier.Verified() {
		return fmt.Errorf("content %s in namespace %q: berthd sent %d bytes that do not match the digest (the blob is damaged: remove it with berth content rm %s and import it again)", dgst, cl.namespace, n, dgst)
	}
	return nil
}

// contentRemove calls Content.Delete for each digest.
func contentRemove(c *cli.Context) error {
	if err := validDigestArgs(c, c.Args().Slice()); err != nil {
		return err
	}
	return forEachArg(c, "at least one DIGEST", func(cl *client, ctx context.Context, dgst string) error {
		api := contentapi.NewContentClient(cl.conn)
		_, err := api.Delete(ctx, &contentapi.DeleteContentRequest{Digest: dgst})
		return cl.fail(err, "remove", contentObject(cl, dgst))
	})
}

// contentLabel calls Content.Update with one update_mask path "labels.KEY" per label, as
// ctr does; without labels it prints the blob's labels (Content.Info).
func contentLabel(c *cli.Context) error {
	return labeler{
		what:   "a DIGEST",
		check:  func(c *cli.Context, dgst string) error { return validDigestArgs(c, []string{dgst}) },
		object: contentObject,
		get: func(ctx context.Context, cl *client, dgst string) (map[string]string, error) {
			resp, err := contentapi.NewContentClient(cl.conn).Info(ctx, &contentapi.InfoRequest{Digest: dgst})
			return resp.GetInfo().GetLabels(), err
		},
		update: func(ctx context.Context, cl *client, dgst string, labels map[string]string, mask *fieldmaskpb.FieldMask) error {
			_, err := contentapi.NewContentClient(cl.conn).Update(ctx, &contentapi.UpdateRequest{
				Info: &contentapi.Info{Digest: dgst, Labels: labels}, UpdateMask: mask})
			return err
		},
	}.run(c)
}

// contentIngest writes stdin through Content.Write as ctr content ingest does.
func contentIngest(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one ingest REF")
	}
	ref := c.Args().First()
	expected := digest.Digest(c.String("expected-digest"))
	if expected != "" {
		if err := validDigestArgs(c, []string{string(expected)}); err != nil {
			return err
		}
	}
	size := c.Int64("expected-size")
	if size < 0 {
		return usagef(c, "--expected-size must not be negative")
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	dgst, _, err := writeContent(ctx, contentapi.NewContentClient(cl.conn), ref, in, size, expected, nil)
	if err != nil {
		var ce *contentError
		if errors.As(err, &ce) {
			return err
		}
		return cl.fail(err, "write", cl.object("ingest", ref),
			when(errdefs.ErrFailedPrecondition, "does not hold what was expected: the data's size or digest differs from --expected-size or --expected-digest"))
	}
	fmt.Fprintln(c.App.Writer, dgst)
	return nil
}

// ingestView is an ingest as --json prints it.
type ingestView struct {
	Ref       string     `json:"ref"`
	Offset    int64      `json:"offset"`
	Total     int64      `json:"total,omitempty"`
	Expected  string     `json:"expected,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// contentActive calls Content.ListStatuses.
func contentActive(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := contentapi.NewContentClient(cl.conn).ListStatuses(ctx, &contentapi.ListStatusesRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "list", cl.object("ingests", ""))
	}
	views := []ingestView{}
	for _, st := range resp.GetStatuses() {
		views = append(views, ingestView{Ref: st.GetRef(), Offset: st.GetOffset(), Total: st.GetTotal(), Expected: st.GetExpected(),
			StartedAt: jsonTime(st.GetStartedAt()), UpdatedAt: jsonTime(st.GetUpdatedAt())})
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, v := range views {
			fmt.Fprintln(w, v.Ref)
		}
		return nil
	}
	t := newTable(w, "REF", "SIZE", "TOTAL", "STARTED", "UPDATED")
	for _, v := range views {
		total := ""
		if v.Total > 0 {
			total = byteSize(v.Total)
		}
		started, updated := "", ""
		if v.StartedAt != nil {
			started = v.StartedAt.Format(timeLayout)
		}
		if v.UpdatedAt != nil {
			updated = v.UpdatedAt.Format(timeLayout)
		}
		t.row(v.Ref, byteSize(v.Offset), total, started, updated)
	}
	return t.flush()
}

// writeChunk is the most data one Content.Write message carries (as ctr).
const writeChunk = 1 << 20

// contentError is a failure of the data written, not of a request: it is rendered as it is.
type contentError struct{ msg string }

func (e *contentError) Error() string { return e.msg }

// writeContent writes r through the ingest ref with containerd's Content.Write protocol
// and commits it: STAT (ref, total, expected: a blob present already answers AlreadyExists
// and nothing is sent), WRITE messages of up to 1 MiB at increasing offsets, COMMIT with
// the digest of what was sent, so that berthd verifies exactly that. An ingest left
// behind (an interrupted import, a daemon restart) is resumed where it stopped once the
// digest of its data is checked against the start of r; if it differs, the ingest is
// aborted and an error says to run again. size 0 means unknown; expected may be empty.
// progress, if set, is told of each byte berthd acknowledged. It returns the digest of
// the blob and whether it was present already. Errors of requests are gRPC's.
func writeContent(ctx context.Context, api contentapi.ContentClient, ref string, r io.Reader, size int64, expected digest.Digest, progress func(int64)) (digest.Digest, bool, error) {
	var (
		stream contentapi.Content_WriteClient
		st     *contentapi.WriteContentResponse
		err    error
	)
	// A ref held by another writer (the same blob in a concurrent import) is Unavailable
	// until it is released: wait, as containerd's OpenWriter does.
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		if stream, err = api.Write(ctx); err != nil {
			return "", false, err
		}
		if err = stream.Send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_STAT, Ref: ref, Total: size, Expected: expected.String()}); err == nil {
			st, err = stream.Recv()
		}
		if err == nil || !errdefs.IsUnavailable(errgrpc.ToNative(err)) {
			break
		}
		_ = stream.CloseSend()
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		if expected != "" && errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
			return expected, true, nil
		}
		return "", false, err
	}
	defer func() {
		_ = stream.CloseSend()
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	abort := func(cause error) error {
		_ = stream.CloseSend()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = api.Abort(actx, &contentapi.AbortRequest{Ref: ref})
		return cause
	}

	digester := digest.Canonical.Digester()
	offset := st.GetOffset()
	if offset > 0 && (size == 0 || offset <= size) {
		// resume: the ingest must hold the start of r
		if _, err := io.CopyN(digester.Hash(), r, offset); err != nil {
			return "", false, abort(err)
		}
		if digester.Digest().String() != st.GetDigest() {
			return "", false, abort(&contentError{fmt.Sprintf("ingest %q held %d bytes that are not the start of this blob; it was discarded: run the command again", ref, offset)})
		}
		if progress != nil {
			progress(offset)
		}
	} else {
		offset = 0 // a WRITE at offset 0 starts the ingest again
	}
	buf := make([]byte, writeChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			digester.Hash().Write(buf[:n])
			if err := stream.Send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Offset: offset, Data: buf[:n]}); err != nil {
				return "", false, err
			}
			resp, err := stream.Recv()
			if err != nil {
				return "", false, err
			}
			offset += int64(n)
			if resp.GetOffset() != offset {
				return "", false, abort(&contentError{fmt.Sprintf("ingest %q: berthd is at offset %d after a write that ends at %d", ref, resp.GetOffset(), offset)})
			}
			if progress != nil {
				progress(int64(n))
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			// the data is bad (a blob of an archive that does not match its digest) or
			// unreadable: what was written of it must not be resumed
			return "", false, abort(rerr)
		}
	}
	if size > 0 && offset != size {
		return "", false, abort(&contentError{fmt.Sprintf("ingest %q: read %d bytes, expected %d", ref, offset, size)})
	}
	got := digester.Digest()
	if expected != "" && got != expected {
		return "", false, abort(&contentError{fmt.Sprintf("ingest %q: the data has digest %s, not the %s expected; nothing was committed", ref, got, expected)})
	}
	if err := stream.Send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Total: offset, Offset: offset, Expected: got.String()}); err != nil {
		return "", false, err
	}
	if _, err := stream.Recv(); err != nil {
		if errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
			return got, true, nil
		}
		return "", false, err
	}
	return got, false, nil
}

// contentReader opens blobs through Content.Read; it is the imagearchive.Provider of
// export and of what reads images. Errors are errdefs classes.
type contentReader struct {
	api contentapi.ContentClient
}

// Open starts reading a blob; a missing blob is errdefs.ErrNotFound at once.
func (p contentReader) Open(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := content.ValidateDigest(desc.Digest); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := p.api.Read(ctx, &contentapi.ReadContentRequest{Digest: desc.Digest.String()})
	if err != nil {
		cancel()
		return nil, errgrpc.ToNative(err)
	}
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, errgrpc.ToNative(err)
	}
	return &readStream{stream: stream, cancel: cancel, buf: first.GetData(), eof: err != nil}, nil
}

// readStream is the bytes of a Content.Read stream.
type readStream struct {
	stream contentapi.Content_ReadClient
	cancel context.CancelFunc
	buf    []byte
	eof    bool
}

func (r *readStream) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		resp, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			r.eof = true
			continue
		}
		if err != nil {
			return 0, errgrpc.ToNative(err)
		}
		r.buf = resp.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *readStream) Close() error {
	r.cancel()
	return nil
}
