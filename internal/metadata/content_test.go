package metadata

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/content/local"
	"github.com/berth-dev/berth/internal/content/testsuite"
	"github.com/berth-dev/berth/internal/leases"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// nsStore puts a namespace into the context of every call, for the shared
// suite, which knows nothing of namespaces.
type nsStore struct {
	cs *ContentStore
	ns string
}

func (s nsStore) ctx(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, s.ns) }

func (s nsStore) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	return s.cs.Info(s.ctx(ctx), d)
}
func (s nsStore) Update(ctx context.Context, i content.Info, fp ...string) (content.Info, error) {
	return s.cs.Update(s.ctx(ctx), i, fp...)
}
func (s nsStore) Walk(ctx context.Context, fn content.WalkFunc, fs ...string) error {
	return s.cs.Walk(s.ctx(ctx), fn, fs...)
}
func (s nsStore) Delete(ctx context.Context, d digest.Digest) error {
	return s.cs.Delete(s.ctx(ctx), d)
}
func (s nsStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return s.cs.ReaderAt(s.ctx(ctx), desc)
}
func (s nsStore) Status(ctx context.Context, ref string) (content.Status, error) {
	return s.cs.Status(s.ctx(ctx), ref)
}
func (s nsStore) ListStatuses(ctx context.Context, fs ...string) ([]content.Status, error) {
	return s.cs.ListStatuses(s.ctx(ctx), fs...)
}
func (s nsStore) Abort(ctx context.Context, ref string) error { return s.cs.Abort(s.ctx(ctx), ref) }
func (s nsStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	return s.cs.Writer(s.ctx(ctx), opts...)
}

func TestContentSuite(t *testing.T) {
	testsuite.Run(t, "metadata", func(t *testing.T, root string) (content.Store, func() error) {
		backend, err := local.New(root)
		if err != nil {
			t.Fatal(err)
		}
		return nsStore{cs: NewContentStore(openDB(t), backend), ns: "suite"}, nil
	}, testsuite.SupportsLabels())
}

func openContent(t *testing.T) (*ContentStore, *local.Store) {
	t.Helper()
	backend, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return NewContentStore(openDB(t), backend), backend
}

func nsctx(t *testing.T, ns string) context.Context {
	return namespaces.WithNamespace(t.Context(), ns)
}

func wantErr(t *testing.T, what string, err error, is func(error) bool) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("%s: got %v", what, err)
	}
}

// put writes b under ref as a client does (content.WriteBlob), with the
// descriptor when withDesc, else with no expectation at all (ctr import).
func put(t *testing.T, ctx context.Context, cs content.Store, ref string, b []byte, withDesc bool, opts ...content.Opt) digest.Digest {
	t.Helper()
	d := ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
	if !withDesc {
		w, err := content.OpenWriter(ctx, cs, content.WithRef(ref))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx, 0, "", opts...); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("commit %s: %v", ref, err)
		}
		return d.Digest
	}
	if err := content.WriteBlob(ctx, cs, ref, bytes.NewReader(b), d, opts...); err != nil {
		t.Fatalf("write %s: %v", ref, err)
	}
	return d.Digest
}

func readAll(t *testing.T, ctx context.Context, cs content.Store, d digest.Digest) ([]byte, error) {
	t.Helper()
	return content.ReadBlob(ctx, cs, ocispec.Descriptor{Digest: d}, 0)
}

func digests(t *testing.T, ctx context.Context, cs content.Store) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	if err := cs.Walk(ctx, func(i content.Info) error { out = append(out, i.Digest); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestContentNamespaces(t *testing.T) {
	for _, withDesc := range []bool{true, false} {
		name := "no expectation"
		if withDesc {
			name = "with descriptor"
		}
		t.Run(name, func(t *testing.T) {
			cs, backend := openContent(t)
			a, b := nsctx(t, "a"), nsctx(t, "b")
			data := []byte("shared between namespaces")
			d := put(t, a, cs, "ref", data, withDesc, content.WithLabels(map[string]string{"owner": "a"}))

			// b sees nothing of a's blob.
			_, err := cs.Info(b, d)
			wantErr(t, "info in b", err, errdefs.IsNotFound)
			_, err = cs.ReaderAt(b, ocispec.Descriptor{Digest: d})
			wantErr(t, "reader in b", err, errdefs.IsNotFound)
			err = cs.Delete(b, d)
			wantErr(t, "delete in b", err, errdefs.IsNotFound)
			_, err = cs.Update(b, content.Info{Digest: d, Labels: map[string]string{"x": "y"}})
			wantErr(t, "update in b", err, errdefs.IsNotFound)
			if ds := digests(t, b, cs); len(ds) != 0 {
				t.Fatalf("walk in b = %v", ds)
			}
			if got, err := readAll(t, a, cs, d); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read in a: %q %v", got, err)
			}

			// Writing it in b makes it visible there: a success for the
			// writer, with b's own labels.
			put(t, b, cs, "ref", data, withDesc, content.WithLabels(map[string]string{"owner": "b"}))
			ib, err := cs.Info(b, d)
			if err != nil || ib.Labels["owner"] != "b" || ib.Size != int64(len(data)) {
				t.Fatalf("info in b: %+v %v", ib, err)
			}
			if ia, _ := cs.Info(a, d); ia.Labels["owner"] != "a" {
				t.Errorf("labels of a changed: %v", ia.Labels)
			}
			// Writing it again in b is AlreadyExists (clients take it as success).
			w, err := cs.Writer(b, content.WithRef("again"))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data)
			err = w.Commit(b, int64(len(data)), d)
			wantErr(t, "second commit in b", err, errdefs.IsAlreadyExists)
			if _, err := cs.Status(b, "again"); !errdefs.IsNotFound(err) {
				t.Errorf("ingest left after AlreadyExists: %v", err)
			}
			_, err = cs.Writer(b, content.WithRef("again"), content.WithDescriptor(ocispec.Descriptor{Digest: d}))
			wantErr(t, "writer for a blob b has", err, errdefs.IsAlreadyExists)

			// Delete in a leaves b's, and the bytes on disk for the GC.
			if cs.TakeDirty() {
				t.Error("dirty before any delete")
			}
			var hooked []digest.Digest
			cs.SetDeleteHook(func(_ context.Context, dg digest.Digest) { hooked = append(hooked, dg) })
			if err := cs.Delete(a, d); err != nil {
				t.Fatal(err)
			}
			if !cs.TakeDirty() || cs.TakeDirty() {
				t.Error("TakeDirty after a delete: want true once")
			}
			if !slices.Equal(hooked, []digest.Digest{d}) {
				t.Errorf("delete hook saw %v", hooked)
			}
			_, err = cs.Info(a, d)
			wantErr(t, "info in a after delete", err, errdefs.IsNotFound)
			if got, err := readAll(t, b, cs, d); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read in b after a's delete: %q %v", got, err)
			}
			if _, err := backend.Info(t.Context(), d); err != nil {
				t.Errorf("bytes gone from the backend: %v", err)
			}
			// a can have it back.
			put(t, a, cs, "back", data, withDesc)
			if _, err := cs.Info(a, d); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestContentIngestsPerNamespace(t *testing.T) {
	cs, _ := openContent(t)
	a, b := nsctx(t, "a"), nsctx(t, "b")
	wa, err := cs.Writer(a, content.WithRef("same"))
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	// The same ref in another namespace is another ingest, not a locked one.
	wb, err := cs.Writer(b, content.WithRef("same"))
	if err != nil {
		t.Fatalf("same ref in b: %v", err)
	}
	defer wb.Close()
	wa.Write([]byte("aaaa"))
	wb.Write([]byte("bb"))
	wa.Close()
	wb.Close()
	for ns, want := range map[string]int64{"a": 4, "b": 2} {
		sts, err := cs.ListStatuses(nsctx(t, ns))
		if err != nil || len(sts) != 1 || sts[0].Ref != "same" || sts[0].Offset != want {
			t.Errorf("statuses in %s = %+v, %v", ns, sts, err)
		}
	}
	if err := cs.Abort(a, "same"); err != nil {
		t.Fatal(err)
	}
	if st, err := cs.Status(b, "same"); err != nil || st.Offset != 2 {
		t.Errorf("b's ingest after a's abort: %+v %v", st, err)
	}
	_, err = cs.Status(nsctx(t, "c"), "same")
	wantErr(t, "status in c", err, errdefs.IsNotFound)
	_, err = cs.Status(t.Context(), "same")
	wantErr(t, "status without namespace", err, errdefs.IsFailedPrecondition)
	// unleased ingests expire
	err = cs.db.View(func(tx *bolt.Tx) error {
		if getTime(bucketPath(tx, "b", bucketContent, bucketIngests, []byte("same")), keyExpireAt).IsZero() {
			t.Error("unleased ingest has no expireat")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestContentSharedWriter(t *testing.T) {
	cs, _ := openContent(t)
	a, b := nsctx(t, "a"), nsctx(t, "b")
	data := []byte("0123456789")
	d := put(t, a, cs, "x", data, true)
	desc := ocispec.Descriptor{Digest: d, Size: int64(len(data))}

	// With the descriptor, b's writer is complete at once.
	w, err := cs.Writer(b, content.WithRef("s"), content.WithDescriptor(desc))
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.Status()
	if err != nil || st.Offset != 10 || st.Total != 10 || st.Expected != d || st.Ref != "s" || w.Digest() != d {
		t.Fatalf("shared status = %+v %v, digest %s", st, err, w.Digest())
	}
	err = w.Commit(b, 11, "")
	wantErr(t, "shared commit with a wrong size", err, errdefs.IsFailedPrecondition)

	// A client that starts over writes for real.
	w, err = cs.Writer(b, content.WithRef("s"), content.WithDescriptor(desc))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.Status(); st.Offset != 0 {
		t.Fatalf("offset after truncate = %d", st.Offset)
	}
	w.Write(data)
	if err := w.Commit(b, 10, d); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, b, cs, d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read in b: %q %v", got, err)
	}

	// Writing past the shared blob keeps its bytes in front.
	c := nsctx(t, "c")
	w, err = cs.Writer(c, content.WithRef("s"), content.WithDescriptor(desc))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("ab"))
	want := append(slices.Clone(data), "ab"...)
	if w.Digest() != digest.FromBytes(want) {
		t.Fatalf("digest after writing past a shared blob = %s", w.Digest())
	}
	err = w.Commit(c, 0, "")
	wantErr(t, "commit of more than the expected blob", err, errdefs.IsFailedPrecondition)
	w, err = cs.Writer(c, content.WithRef("s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(c, 12, digest.FromBytes(want)); err != nil {
		t.Fatalf("commit after all: %v", err)
	}
	if got, err := readAll(t, c, cs, digest.FromBytes(want)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read in c: %q %v", got, err)
	}
}

func TestContentLabelValidation(t *testing.T) {
	cs, _ := openContent(t)
	a := nsctx(t, "a")
	d := put(t, a, cs, "x", []byte("x"), true)
	big := strings.Repeat("v", 4097)
	for _, tc := range []struct {
		labels map[string]string
		paths  []string
	}{
		{map[string]string{"k": big}, nil},
		{map[string]string{"k": big}, []string{"labels.k"}},
		{map[string]string{"": "v"}, []string{"labels"}},
	} {
		_, err := cs.Update(a, content.Info{Digest: d, Labels: tc.labels}, tc.paths...)
		wantErr(t, "update with a bad label", err, errdefs.IsInvalidArgument)
	}
	_, err := cs.Update(a, content.Info{Digest: d}, "size")
	wantErr(t, "update of size", err, errdefs.IsInvalidArgument)
	w, err := cs.Writer(a, content.WithRef("y"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("y"))
	err = w.Commit(a, 1, "", content.WithLabels(map[string]string{"k": big}))
	wantErr(t, "commit with a bad label", err, errdefs.IsInvalidArgument)
	_, err = cs.Info(a, digest.FromString("y"))
	wantErr(t, "info after a refused commit", err, errdefs.IsNotFound)
	for _, ref := range []string{"", "a\x00b", "a\nb", strings.Repeat("r", 4097), "\xff"} {
		_, err := cs.Writer(a, content.WithRef(ref))
		wantErr(t, "writer with ref "+ref, err, errdefs.IsInvalidArgument)
	}
	got, err := cs.Update(a, content.Info{Digest: d, Labels: map[string]string{"a": "1", "b": "2"}})
	if err != nil || !maps.Equal(got.Labels, map[string]string{"a": "1", "b": "2"}) {
		t.Fatalf("update = %+v %v", got, err)
	}
	got, err = cs.Update(a, content.Info{Digest: d, Labels: map[string]string{"a": ""}}, "labels.a")
	if err != nil || !maps.Equal(got.Labels, map[string]string{"b": "2"}) {
		t.Fatalf("update removing a = %+v %v", got, err)
	}
}

func leaseResources(t *testing.T, ctx context.Context, db *DB, id string) []LeaseResource {
	t.Helper()
	rs, err := db.Leases().ListResources(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestContentLeases(t *testing.T) {
	cs, _ := openContent(t)
	a := nsctx(t, "a")
	if _, err := cs.db.Leases().Create(a, Lease{ID: "l1"}); err != nil {
		t.Fatal(err)
	}
	la := leases.WithLease(a, "l1")

	w, err := cs.Writer(la, content.WithRef("ing"))
	if err != nil {
		t.Fatal(err)
	}
	if rs := leaseResources(t, a, cs.db, "l1"); !slices.Equal(rs, []LeaseResource{{ID: "ing", Type: "ingests"}}) {
		t.Errorf("resources with an open ingest = %v", rs)
	}
	err = cs.db.View(func(tx *bolt.Tx) error {
		if !getTime(bucketPath(tx, "a", bucketContent, bucketIngests, []byte("ing")), keyExpireAt).IsZero() {
			t.Error("a leased ingest has an expiry")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("leased"))
	if err := w.Commit(la, 0, ""); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("leased")
	if rs := leaseResources(t, a, cs.db, "l1"); !slices.Equal(rs, []LeaseResource{{ID: d.String(), Type: "content"}}) {
		t.Errorf("resources after commit = %v", rs)
	}

	// A blob the namespace has is added to the lease by a writer that
	// expects it, and by a commit of it.
	if _, err := cs.db.Leases().Create(a, Lease{ID: "l2"}); err != nil {
		t.Fatal(err)
	}
	l2 := leases.WithLease(a, "l2")
	_, err = cs.Writer(l2, content.WithRef("x"), content.WithDescriptor(ocispec.Descriptor{Digest: d}))
	wantErr(t, "writer for a present blob", err, errdefs.IsAlreadyExists)
	if rs := leaseResources(t, a, cs.db, "l2"); !slices.Equal(rs, []LeaseResource{{ID: d.String(), Type: "content"}}) {
		t.Errorf("l2 resources = %v", rs)
	}
	if err := cs.db.Leases().Delete(a, "l2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.db.Leases().Create(a, Lease{ID: "l2"}); err != nil {
		t.Fatal(err)
	}
	put(t, l2, cs, "y", []byte("leased"), false)
	if rs := leaseResources(t, a, cs.db, "l2"); !slices.Equal(rs, []LeaseResource{{ID: d.String(), Type: "content"}}) {
		t.Errorf("l2 resources after an AlreadyExists commit = %v", rs)
	}

	// Delete and abort under the lease release the resource.
	if err := cs.Delete(la, d); err != nil {
		t.Fatal(err)
	}
	if rs := leaseResources(t, a, cs.db, "l1"); len(rs) != 0 {
		t.Errorf("l1 resources after delete = %v", rs)
	}
	w, err = cs.Writer(la, content.WithRef("abort"))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := cs.Abort(la, "abort"); err != nil {
		t.Fatal(err)
	}
	if rs := leaseResources(t, a, cs.db, "l1"); len(rs) != 0 {
		t.Errorf("l1 resources after abort = %v", rs)
	}

	// A lease that does not exist is NotFound, and nothing is started.
	missing := leases.WithLease(a, "missing")
	_, err = cs.Writer(missing, content.WithRef("m"))
	wantErr(t, "writer under a missing lease", err, errdefs.IsNotFound)
	if _, err := cs.Status(a, "m"); !errdefs.IsNotFound(err) {
		t.Errorf("ingest started under a missing lease: %v", err)
	}
	// ... and a lease of another namespace does not exist here.
	_, err = cs.Writer(leases.WithLease(nsctx(t, "b"), "l1"), content.WithRef("m"))
	wantErr(t, "writer under a lease of another namespace", err, errdefs.IsNotFound)
}
