package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
	eventtypes "github.com/containerd/containerd/api/events"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// ctrIO runs Debian's ctr against d with stdin and returns its stdout only.
func ctrIO(t *testing.T, d *testutil.Daemon, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", d.Address}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ctr %v: %w\n%s", args, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

func ctrOK(t *testing.T, d *testutil.Daemon, args ...string) string {
	t.Helper()
	out, err := d.Ctr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(n), byte(n >> 8), byte(n >> 16)}).Read(b)
	return b
}

// subscribe returns a function that waits for the next event on topic.
func subscribe(t *testing.T, d *testutil.Daemon, ns, topic string) func() any {
	t.Helper()
	ctx, cancel := context.WithCancel(nsCtx(t, ns))
	t.Cleanup(cancel)
	stream, err := eventsapi.NewEventsClient(d.Conn(t)).Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: []string{fmt.Sprintf("topic==%q", topic)}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the subscription reach the daemon
	return func() any {
		t.Helper()
		env, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", topic, err)
		}
		if env.Namespace != ns || env.Topic != topic {
			t.Fatalf("event %s in %s, want %s in %s", env.Topic, env.Namespace, topic, ns)
		}
		v, err := typeurl.UnmarshalAny(env.Event)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestCtrContent(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	if out := ctrOK(t, d, "content", "ls"); strings.Count(out, "\n") != 1 {
		t.Fatalf("content ls of an empty store:\n%s", out)
	}
	// More than one Read chunk (1 MiB) and one ctr write message.
	data := randomBytes(2<<20+123, 1)
	dgst := digest.FromBytes(data)
	if _, err := ctrIO(t, d, data, "content", "ingest", "my-ref"); err != nil {
		t.Fatal(err)
	}
	out := ctrOK(t, d, "content", "ls")
	if !regexp.MustCompile(`(?m)^` + dgst.String() + `\s+2\.\d+MB\s`).MatchString(out) {
		t.Fatalf("content ls lacks %s:\n%s", dgst, out)
	}
	got, err := ctrIO(t, d, nil, "content", "get", dgst.String())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content get: %d bytes, %v; want the %d bytes ingested", len(got), err, len(data))
	}
	ctrOK(t, d, "content", "label", dgst.String(), "foo=bar", "containerd.io/gc.root=now")
	mustContain(t, ctrOK(t, d, "content", "ls"), "foo=bar", "containerd.io/gc.root=now")
	ctrOK(t, d, "content", "label", dgst.String(), "foo=")
	if out := ctrOK(t, d, "content", "ls"); strings.Contains(out, "foo=") {
		t.Errorf("label foo was not removed:\n%s", out)
	}
	// filters
	if out := ctrOK(t, d, "content", "ls", "-q", "labels.foo"); strings.TrimSpace(out) != "" {
		t.Errorf("content ls labels.foo:\n%s", out)
	}

	// another namespace sees nothing until it writes the blob itself
	if out := ctrOK(t, d, "-n", "other", "content", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("content ls in another namespace:\n%s", out)
	}
	if _, err := ctrIO(t, d, nil, "-n", "other", "content", "get", dgst.String()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("content get in another namespace: %v", err)
	}
	if _, err := ctrIO(t, d, data, "-n", "other", "content", "ingest", "my-ref"); err != nil {
		t.Fatal(err)
	}
	if got, err := ctrIO(t, d, nil, "-n", "other", "content", "get", dgst.String()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content get in other: %d bytes, %v", len(got), err)
	}
	if out := ctrOK(t, d, "-n", "other", "content", "ls"); strings.Contains(out, "gc.root") {
		t.Errorf("labels leaked into another namespace:\n%s", out)
	}

	deleted := subscribe(t, d, "default", "/content/delete")
	ctrOK(t, d, "content", "rm", dgst.String())
	if ev, ok := deleted().(*eventtypes.ContentDelete); !ok || ev.Digest != dgst.String() {
		t.Errorf("/content/delete event: %#v", ev)
	}
	if out := ctrOK(t, d, "content", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("content ls after rm:\n%s", out)
	}
	if _, err := ctrIO(t, d, nil, "content", "get", dgst.String()); err == nil {
		t.Error("content get after rm succeeded")
	}
	// other keeps its own
	if got, err := ctrIO(t, d, nil, "-n", "other", "content", "get", dgst.String()); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content get in other after rm in default: %d bytes, %v", len(got), err)
	}
}

func TestCtrLeases(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	if out := ctrOK(t, d, "leases", "ls"); strings.Count(out, "\n") != 1 {
		t.Fatalf("leases ls:\n%s", out)
	}
	ctrOK(t, d, "leases", "create", "--id", "mylease", "--expires", "1h", "team=a")
	generated := strings.TrimSpace(ctrOK(t, d, "leases", "create"))
	if !regexp.MustCompile(`^\d+-\S{4}$`).MatchString(generated) {
		t.Errorf("generated lease id %q", generated)
	}
	out := ctrOK(t, d, "leases", "ls")
	mustContain(t, out, "mylease", "team=a", "containerd.io/gc.expire=", generated)
	if _, err := d.Ctr("leases", "create", "--id", "mylease"); err == nil {
		t.Error("second lease create succeeded")
	}

	// resources through the API, and content written under the lease
	conn := d.Conn(t)
	ls := leasesapi.NewLeasesClient(conn)
	ctx := nsCtx(t, "default")
	blob := []byte("leased blob")
	if _, err := ls.AddResource(ctx, &leasesapi.AddResourceRequest{ID: "mylease", Resource: &leasesapi.Resource{ID: "k1", Type: "snapshots/overlayfs"}}); err != nil {
		t.Fatal(err)
	}
	lctx := metadata.AppendToOutgoingContext(ctx, "containerd-lease", "mylease")
	writeContent(t, contentapi.NewContentClient(conn), lctx, "leased-ref", blob, "")
	res, err := ls.ListResources(ctx, &leasesapi.ListResourcesRequest{ID: "mylease"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Resources {
		got = append(got, r.Type+" "+r.ID)
	}
	want := []string{"content " + digest.FromBytes(blob).String(), "snapshots/overlayfs k1"}
	if !slices.Equal(got, want) {
		t.Errorf("lease resources %v, want %v", got, want)
	}
	_, err = ls.AddResource(ctx, &leasesapi.AddResourceRequest{ID: "nolease", Resource: &leasesapi.Resource{ID: "k", Type: "ingests"}})
	wantClass(t, "add to a missing lease", err, errdefs.IsNotFound, "not found")

	ctrOK(t, d, "leases", "rm", "mylease", generated)
	if out := ctrOK(t, d, "leases", "ls"); strings.Contains(out, "mylease") {
		t.Errorf("lease listed after rm:\n%s", out)
	}
	if _, err := d.Ctr("leases", "rm", "mylease"); err == nil {
		t.Error("second lease rm succeeded")
	}
	_, err = ls.Delete(ctx, &leasesapi.DeleteRequest{ID: "mylease", Sync: true})
	wantClass(t, "delete of a missing lease", err, errdefs.IsNotFound, "not found")
}

// writeContent writes data as ctr does (STAT, STAT, WRITE, COMMIT) and
// checks the replies.
func writeContent(t *testing.T, cc contentapi.ContentClient, ctx context.Context, ref string, data []byte, expected digest.Digest) {
	t.Helper()
	stream, err := cc.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *contentapi.WriteContentRequest) *contentapi.WriteContentResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("write %s %v: %v", ref, req.Action, err)
		}
		return resp
	}
	size := int64(len(data))
	st := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_STAT, Ref: ref, Total: size, Expected: expected.String()})
	if st.Offset != 0 || st.Total != size || st.Digest != digest.FromBytes(nil).String() || st.StartedAt == nil || st.UpdatedAt == nil {
		t.Fatalf("STAT reply %v", st)
	}
	send(&contentapi.WriteContentRequest{})
	w := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Data: data})
	if w.Offset != size || w.Digest != digest.FromBytes(data).String() {
		t.Fatalf("WRITE reply %v", w)
	}
	c := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Total: size, Offset: size})
	if c.Offset != size || c.Digest != digest.FromBytes(data).String() {
		t.Fatalf("COMMIT reply %v", c)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

func TestCtrImagesAPI(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	ctx := nsCtx(t, "default")
	layer, diffID := ociLayer(t, map[string][]byte{"etc/hello": []byte("hi\n")})
	img := newOCIImage(t, layer, diffID)
	cc := contentapi.NewContentClient(conn)
	for dg, b := range img.Blobs {
		writeContent(t, cc, ctx, "api-"+dg.String(), b, "")
	}
	is := imagesapi.NewImagesClient(conn)
	name := "example.com/test/app:1.0"
	target := &types.Descriptor{MediaType: img.Manifest.MediaType, Digest: img.Manifest.Digest.String(), Size: img.Manifest.Size}
	created := subscribe(t, d, "default", "/images/create")
	_, err := is.Update(ctx, &imagesapi.UpdateImageRequest{Image: &imagesapi.Image{Name: name, Target: target}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"target"}}})
	wantClass(t, "update of a missing image", err, errdefs.IsNotFound, "not found")
	resp, err := is.Create(ctx, &imagesapi.CreateImageRequest{Image: &imagesapi.Image{Name: name, Target: target, Labels: map[string]string{"a": "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Image.CreatedAt.AsTime().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("created at %v", resp.Image.CreatedAt.AsTime())
	}
	if ev, ok := created().(*eventtypes.ImageCreate); !ok || ev.Name != name || ev.Labels["a"] != "b" {
		t.Errorf("/images/create event: %#v", ev)
	}
	_, err = is.Create(ctx, &imagesapi.CreateImageRequest{Image: &imagesapi.Image{Name: name, Target: target}})
	wantClass(t, "second create", err, errdefs.IsAlreadyExists, "already exists")

	out := ctrOK(t, d, "images", "ls")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+` + regexp.QuoteMeta(ocispec.MediaTypeImageManifest) + `\s+` + img.Manifest.Digest.String() + `\s+.*linux/`).MatchString(out) {
		t.Fatalf("images ls:\n%s", out)
	}
	if out := ctrOK(t, d, "images", "ls", "-q", "labels.a==b"); strings.TrimSpace(out) != name {
		t.Errorf("images ls labels.a==b:\n%s", out)
	}
	if out := ctrOK(t, d, "-n", "other", "images", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images in another namespace:\n%s", out)
	}
	ctrOK(t, d, "images", "label", name, "c=d")
	g, err := is.Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil || g.Image.Labels["c"] != "d" || g.Image.Labels["a"] != "b" || g.Image.Target.Digest != target.Digest {
		t.Fatalf("get after label: %v %v", g, err)
	}

	deleted := subscribe(t, d, "default", "/images/delete")
	ctrOK(t, d, "images", "rm", name)
	if ev, ok := deleted().(*eventtypes.ImageDelete); !ok || ev.Name != name {
		t.Errorf("/images/delete event: %#v", ev)
	}
	if out := ctrOK(t, d, "images", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images ls after rm:\n%s", out)
	}
	_, err = is.Get(ctx, &imagesapi.GetImageRequest{Name: name})
	wantClass(t, "get after rm", err, errdefs.IsNotFound, "not found")
	_, err = is.Delete(ctx, &imagesapi.DeleteImageRequest{Name: name, Sync: true})
	wantClass(t, "second delete", err, errdefs.IsNotFound, "not found")
}

func TestCtrImportOCI(t *testing.T) {
	testutil.RequireBinary(t, "ctr")
	d := testutil.StartDaemon(t)
	name := "docker.io/library/tiny:latest"
	tarPath, manifest := buildOCIArchive(t, map[string][]byte{
		"etc/motd":  []byte("berth\n"),
		"bin/hello": randomBytes(100_000, 2),
	}, name)
	blobs := ociArchiveBlobs(t, tarPath)
	if len(blobs) != 4 {
		t.Fatalf("archive holds %d blobs, want index, manifest, config, layer", len(blobs))
	}
	for _, ns := range []string{"default", "default", "other"} { // again: AlreadyExists; other: shared
		if _, err := d.Ctr("-n", ns, "images", "import", "--no-unpack", tarPath); err != nil {
			t.Fatalf("import in %s: %v", ns, err)
		}
		out := ctrOK(t, d, "-n", ns, "images", "ls")
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+\S+\s+` + manifest.String() + `\s+.*linux/`).MatchString(out) {
			t.Fatalf("images ls in %s:\n%s", ns, out)
		}
		for dg, want := range blobs {
			got, err := ctrIO(t, d, nil, "-n", ns, "content", "get", dg.String())
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("content get %s in %s: %d bytes, %v", dg, ns, len(got), err)
			}
		}
		// ctr labels the manifest with its references, under a lease it removes
		mustContain(t, ctrOK(t, d, "-n", ns, "content", "ls"), "containerd.io/gc.ref.content.config=", "containerd.io/gc.ref.content.l.0=")
		if out := ctrOK(t, d, "-n", ns, "leases", "ls", "-q"); strings.TrimSpace(out) != "" {
			t.Errorf("leases left after import in %s:\n%s", ns, out)
		}
		if out := ctrOK(t, d, "-n", ns, "content", "active"); strings.Count(out, "\n") > 1 {
			t.Errorf("ingests left after import in %s:\n%s", ns, out)
		}
	}
}

func TestContentBadInput(t *testing.T) {
	d := testutil.StartDaemon(t)
	conn := d.Conn(t)
	cc := contentapi.NewContentClient(conn)
	ctx := nsCtx(t, "default")
	hex := strings.Repeat("a", 64)
	for _, bad := range []string{"", "sha256:../..", "sha256:../../../../etc/passwd", "sha256:" + hex[:63], "sha256:" + hex + "a",
		"sha256:" + strings.ToUpper(hex), "sha512:" + hex + hex, hex, "../../" + hex} {
		_, err := cc.Info(ctx, &contentapi.InfoRequest{Digest: bad})
		wantClass(t, "info "+bad, err, errdefs.IsInvalidArgument, "invalid argument")
		_, err = cc.Delete(ctx, &contentapi.DeleteContentRequest{Digest: bad})
		wantClass(t, "delete "+bad, err, errdefs.IsInvalidArgument, "invalid argument")
		_, err = cc.Update(ctx, &contentapi.UpdateRequest{Info: &contentapi.Info{Digest: bad}})
		wantClass(t, "update "+bad, err, errdefs.IsInvalidArgument, "invalid argument")
		rs, err := cc.Read(ctx, &contentapi.ReadContentRequest{Digest: bad})
		if err == nil {
			_, err = rs.Recv()
		}
		wantClass(t, "read "+bad, err, errdefs.IsInvalidArgument, "invalid argument")
	}

	data := randomBytes(3<<20+5, 3)
	dgst := digest.FromBytes(data)
	writeContent(t, cc, ctx, "big", data, dgst)
	read := func(off, size int64) ([]byte, int, error) {
		rs, err := cc.Read(ctx, &contentapi.ReadContentRequest{Digest: dgst.String(), Offset: off, Size: size})
		if err != nil {
			return nil, 0, err
		}
		var out []byte
		msgs := 0
		for {
			m, err := rs.Recv()
			if err == io.EOF {
				return out, msgs, nil
			}
			if err != nil {
				return out, msgs, err
			}
			if len(m.Data) > 1<<20 {
				t.Errorf("read message of %d bytes", len(m.Data))
			}
			if m.Offset != max(off, 0)+int64(len(out)) {
				t.Errorf("read message at offset %d, want %d", m.Offset, max(off, 0)+int64(len(out)))
			}
			msgs++
			out = append(out, m.Data...)
		}
	}
	for _, tc := range []struct{ off, size, from, to int64 }{
		{0, 0, 0, int64(len(data))},
		{0, 32768, 0, 32768},
		{1 << 20, 1<<20 + 1, 1 << 20, 2<<20 + 1},
		{-5, 10, 0, 10},
		{int64(len(data)) - 3, 100, int64(len(data)) - 3, int64(len(data))},
		{int64(len(data)), 0, int64(len(data)), int64(len(data))},
	} {
		got, _, err := read(tc.off, tc.size)
		if err != nil || !bytes.Equal(got, data[tc.from:tc.to]) {
			t.Errorf("read %d+%d: %d bytes, %v; want bytes %d..%d", tc.off, tc.size, len(got), err, tc.from, tc.to)
		}
	}
	_, _, err := read(int64(len(data))+1, 0)
	wantClass(t, "read past the end", err, errdefs.IsOutOfRange, "out of range")

	// Write: the first message must name a ref.
	write := func(ctx context.Context, reqs ...*contentapi.WriteContentRequest) error {
		t.Helper()
		stream, err := cc.Write(ctx)
		if err != nil {
			return err
		}
		for _, r := range reqs {
			if err := stream.Send(r); err != nil {
				break
			}
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
		return stream.CloseSend()
	}
	err = write(ctx, &contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Data: []byte("x")})
	wantClass(t, "write without ref", err, errdefs.IsInvalidArgument, "invalid argument")
	err = write(ctx, &contentapi.WriteContentRequest{Ref: "bad", Expected: "sha256:../.."})
	wantClass(t, "write with a bad expected digest", err, errdefs.IsInvalidArgument, "invalid argument")
	// A write at the wrong offset is OutOfRange.
	err = write(ctx,
		&contentapi.WriteContentRequest{Ref: "offsets"},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Data: []byte("abc")},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Offset: 5, Data: []byte("def")})
	wantClass(t, "write at a wrong offset", err, errdefs.IsOutOfRange, "out of range")
	st, err := cc.Status(ctx, &contentapi.StatusRequest{Ref: "offsets"})
	if err != nil || st.Status.Offset != 3 || st.Status.Ref != "offsets" {
		t.Fatalf("status after the refused write: %v %v", st, err)
	}
	// Offset 0 over written data starts again; a wrong digest at commit is
	// FailedPrecondition and shows no blob.
	wrong := digest.FromString("something else")
	err = write(ctx,
		&contentapi.WriteContentRequest{Ref: "offsets"},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Offset: 0, Data: []byte("xyz")},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Offset: 3, Total: 3, Expected: wrong.String()})
	wantClass(t, "commit with a wrong digest", err, errdefs.IsFailedPrecondition, "failed precondition")
	for _, dg := range []digest.Digest{wrong, digest.FromString("xyz"), digest.FromString("abcxyz")} {
		_, err := cc.Info(ctx, &contentapi.InfoRequest{Digest: dg.String()})
		wantClass(t, "info after a failed commit", err, errdefs.IsNotFound, "not found")
	}
	err = write(ctx,
		&contentapi.WriteContentRequest{Ref: "offsets"},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Offset: 3, Total: 4})
	wantClass(t, "commit with a wrong size", err, errdefs.IsFailedPrecondition, "failed precondition")
	sts, err := cc.ListStatuses(ctx, &contentapi.ListStatusesRequest{Filters: []string{"ref==offsets"}})
	if err != nil || len(sts.Statuses) != 1 || sts.Statuses[0].Offset != 3 {
		t.Fatalf("statuses: %v %v", sts, err)
	}
	// the retried commit, with labels, succeeds
	err = write(ctx,
		&contentapi.WriteContentRequest{Ref: "offsets"},
		&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Offset: 3, Total: 3, Expected: digest.FromString("xyz").String(), Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cc.Info(ctx, &contentapi.InfoRequest{Digest: digest.FromString("xyz").String()}); err != nil || info.Info.Labels["k"] != "v" || info.Info.Size != 3 {
		t.Fatalf("info after commit: %v %v", info, err)
	}
	// expected declared for a present blob: AlreadyExists at once
	err = write(ctx, &contentapi.WriteContentRequest{Ref: "again", Expected: dgst.String(), Total: int64(len(data))})
	wantClass(t, "write of a present blob", err, errdefs.IsAlreadyExists, "already exists")
	// abort
	if err := write(ctx, &contentapi.WriteContentRequest{Ref: "to-abort"}, &contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Data: []byte("z")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Abort(ctx, &contentapi.AbortRequest{Ref: "to-abort"}); err != nil {
		t.Fatal(err)
	}
	_, err = cc.Abort(ctx, &contentapi.AbortRequest{Ref: "to-abort"})
	wantClass(t, "second abort", err, errdefs.IsNotFound, "not found")
	_, err = cc.Status(ctx, &contentapi.StatusRequest{Ref: "to-abort"})
	wantClass(t, "status after abort", err, errdefs.IsNotFound, "not found")

	// labels
	_, err = cc.Update(ctx, &contentapi.UpdateRequest{Info: &contentapi.Info{Digest: dgst.String(), Labels: map[string]string{"k": strings.Repeat("v", 4096)}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels.k"}}})
	wantClass(t, "oversized label", err, errdefs.IsInvalidArgument, "invalid argument")
	_, err = cc.Update(ctx, &contentapi.UpdateRequest{Info: &contentapi.Info{Digest: dgst.String(), Size: 1}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"size"}}})
	wantClass(t, "update of size", err, errdefs.IsInvalidArgument, "invalid argument")
	ls, err := cc.List(ctx, &contentapi.ListContentRequest{Filters: []string{"labels.k=="}})
	if err == nil {
		_, err = ls.Recv()
	}
	wantClass(t, "malformed list filter", err, errdefs.IsInvalidArgument, "invalid argument")

	// leases: a missing one is NotFound, a malformed header InvalidArgument
	_, err = cc.Info(metadata.AppendToOutgoingContext(ctx, "containerd-lease", strings.Repeat("l", 5000)), &contentapi.InfoRequest{Digest: dgst.String()})
	wantClass(t, "oversized lease header", err, errdefs.IsInvalidArgument, "invalid argument")
	err = write(metadata.AppendToOutgoingContext(ctx, "containerd-lease", "missing"), &contentapi.WriteContentRequest{Ref: "leased"})
	wantClass(t, "write under a missing lease", err, errdefs.IsNotFound, "not found")

	// images
	is := imagesapi.NewImagesClient(conn)
	target := &types.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgst.String(), Size: 10}
	for _, tc := range []struct {
		what string
		img  *imagesapi.Image
	}{
		{"no name", &imagesapi.Image{Target: target}},
		{"NUL in name", &imagesapi.Image{Name: "a\x00b", Target: target}},
		{"no target", &imagesapi.Image{Name: "x"}},
		{"bad digest", &imagesapi.Image{Name: "x", Target: &types.Descriptor{MediaType: "m", Digest: "sha256:../..", Size: 1}}},
		{"no size", &imagesapi.Image{Name: "x", Target: &types.Descriptor{MediaType: "m", Digest: dgst.String()}}},
		{"no media type", &imagesapi.Image{Name: "x", Target: &types.Descriptor{Digest: dgst.String(), Size: 1}}},
	} {
		_, err := is.Create(ctx, &imagesapi.CreateImageRequest{Image: tc.img})
		wantClass(t, "create image: "+tc.what, err, errdefs.IsInvalidArgument, "invalid argument")
	}
	_, err = is.Delete(ctx, &imagesapi.DeleteImageRequest{Name: "missing"})
	wantClass(t, "delete of a missing image", err, errdefs.IsNotFound, "not found")
	_, err = is.List(ctx, &imagesapi.ListImagesRequest{Filters: []string{"name=="}})
	wantClass(t, "malformed image filter", err, errdefs.IsInvalidArgument, "invalid argument")
}
