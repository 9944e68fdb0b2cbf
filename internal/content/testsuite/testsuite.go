// Package testsuite is the conformance suite every content.Store runs: the
// behaviour of containerd's content store that clients depend on (resumable
// ingests, one writer per ref, verified commits, errdefs classes), checked
// through the content interfaces only.
//
// A store runs it from its own tests:
//
//	testsuite.Run(t, "local", func(t *testing.T, root string) (content.Store, func() error) {
//		s, err := local.New(root)
//		...
//		return s, nil
//	}, testsuite.SupportsLabels())
//
// Each case gets a fresh, empty root. Besides the interfaces, the suite only
// looks at the files under root/blobs (if any) to check that a failed
// commit leaves them untouched.
package testsuite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/content"
)

// Option states a capability of the store under test.
type Option func(*config)

type config struct {
	labels bool
}

// SupportsLabels runs the cases that set, update and filter on labels.
func SupportsLabels() Option { return func(c *config) { c.labels = true } }

// env is what each case gets.
type env struct {
	ctx    context.Context
	cs     content.Store
	root   string
	labels bool
}

// Run runs the suite on the stores open returns. open is called once per
// case with an empty directory; the func it returns, if not nil, closes the
// store at the end of the case.
func Run(t *testing.T, name string, open func(t *testing.T, root string) (content.Store, func() error), opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"WriteRead", testWriteRead},
		{"Resume", testResume},
		{"Truncate", testTruncate},
		{"RefLocked", testRefLocked},
		{"CommitMismatch", testCommitMismatch},
		{"CommitExists", testCommitExists},
		{"Labels", testLabels},
		{"Walk", testWalk},
		{"Statuses", testStatuses},
		{"Abort", testAbort},
		{"Delete", testDelete},
		{"ReaderAt", testReaderAt},
		{"LargeBlob", testLargeBlob},
		{"BadDigests", testBadDigests},
		{"EmptyRef", testEmptyRef},
	} {
		t.Run(name+"/"+tc.name, func(t *testing.T) {
			root := t.TempDir()
			cs, closeFn := open(t, root)
			if closeFn != nil {
				t.Cleanup(func() {
					if err := closeFn(); err != nil {
						t.Errorf("close store: %v", err)
					}
				})
			}
			tc.fn(t, &env{ctx: t.Context(), cs: cs, root: root, labels: c.labels})
		})
	}
}

// slack absorbs the precision of file timestamps.
const slack = time.Second

func checkTime(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.Before(lo.Add(-slack)) || got.After(hi.Add(slack)) {
		t.Errorf("%s = %v, want within [%v, %v]", what, got, lo, hi)
	}
}

// blob returns size bytes of deterministic pseudo-random data.
func blob(size int64, seed uint64) ([]byte, digest.Digest) {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(size), byte(size >> 8), byte(size >> 16)})
	_, _ = r.Read(b)
	return b, digest.FromBytes(b)
}

func desc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func (e *env) writer(t *testing.T, opts ...content.WriterOpt) content.Writer {
	t.Helper()
	w, err := e.cs.Writer(e.ctx, opts...)
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func write(t *testing.T, w io.Writer, b []byte) {
	t.Helper()
	// Small chunks, as clients send them.
	if n, err := io.CopyBuffer(w, bytes.NewReader(b), make([]byte, 1000)); err != nil || n != int64(len(b)) {
		t.Fatalf("write: %d of %d bytes: %v", n, len(b), err)
	}
}

// put commits b under ref and returns its digest.
func (e *env) put(t *testing.T, ref string, b []byte, opts ...content.Opt) digest.Digest {
	t.Helper()
	d := desc(b)
	if err := content.WriteBlob(e.ctx, e.cs, ref, bytes.NewReader(b), d, opts...); err != nil {
		t.Fatalf("write blob %s: %v", ref, err)
	}
	return d.Digest
}

func (e *env) read(t *testing.T, d digest.Digest, want []byte) {
	t.Helper()
	got, err := content.ReadBlob(e.ctx, e.cs, ocispec.Descriptor{Digest: d, Size: int64(len(want))}, 0)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s: data differs from what was written", d)
	}
}

func wantErr(t *testing.T, what string, err error, is func(error) bool, class string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("%s: got error %v, want %s", what, err, class)
	}
}

// blobFiles lists the files under root/blobs with their sizes.
func (e *env) blobFiles(t *testing.T) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	err := filepath.WalkDir(filepath.Join(e.root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == filepath.Join(e.root, "blobs") {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files[p] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func testWriteRead(t *testing.T, e *env) {
	for i, tc := range []struct {
		name     string
		size     int64
		withSize bool // give the size to Writer
		withDgst bool // give the digest to Writer
		commit   bool // give size and digest to Commit
	}{
		{"bare", 256, false, false, false},
		{"size", 256, true, false, true},
		{"digest", 4096, false, true, false},
		{"descriptor", 100_003, true, true, true},
		{"empty", 0, true, true, true},
		{"one byte", 1, false, false, true},
		{"multi-megabyte", 2<<20 + 7, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, d := blob(tc.size, uint64(i))
			var wd ocispec.Descriptor
			if tc.withSize {
				wd.Size = tc.size
			}
			if tc.withDgst {
				wd.Digest = d
			}
			start := time.Now()
			w := e.writer(t, content.WithRef("write-"+tc.name), content.WithDescriptor(wd))
			st, err := w.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.Ref != "write-"+tc.name || st.Offset != 0 || st.Total != wd.Size || st.Expected != wd.Digest {
				t.Errorf("new writer status = %+v", st)
			}
			checkTime(t, "StartedAt", st.StartedAt, start, time.Now())
			write(t, w, b)
			if st, _ := w.Status(); st.Offset != tc.size {
				t.Errorf("offset after write = %d, want %d", st.Offset, tc.size)
			}
			if w.Digest() != d {
				t.Errorf("writer digest = %s, want %s", w.Digest(), d)
			}
			var size int64
			var expected digest.Digest
			if tc.commit {
				size, expected = tc.size, d
			}
			pre := time.Now()
			if err := w.Commit(e.ctx, size, expected); err != nil {
				t.Fatalf("commit: %v", err)
			}
			post := time.Now()
			if err := w.Close(); err != nil {
				t.Errorf("close after commit: %v", err)
			}
			info, err := e.cs.Info(e.ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if info.Digest != d || info.Size != tc.size {
				t.Errorf("info = %s %d, want %s %d", info.Digest, info.Size, d, tc.size)
			}
			checkTime(t, "CreatedAt", info.CreatedAt, pre, post)
			checkTime(t, "UpdatedAt", info.UpdatedAt, pre, post)
			e.read(t, d, b)
			if _, err := e.cs.Status(e.ctx, "write-"+tc.name); !errdefs.IsNotFound(err) {
				t.Errorf("status of committed ingest: %v, want not found", err)
			}
		})
	}
}

func testResume(t *testing.T, e *env) {
	modes := []struct {
		name   string
		resume func(w content.Writer, b []byte, written int64) error
	}{
		{"append", func(w content.Writer, b []byte, written int64) error {
			if _, err := io.CopyBuffer(w, bytes.NewReader(b[written:]), make([]byte, 1000)); err != nil {
				return err
			}
			return w.Commit(context.Background(), int64(len(b)), digest.FromBytes(b))
		}},
		{"truncate", func(w content.Writer, b []byte, _ int64) error {
			if err := w.Truncate(0); err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			return w.Commit(context.Background(), int64(len(b)), digest.FromBytes(b))
		}},
		{"copy", func(w content.Writer, b []byte, _ int64) error {
			r := struct{ io.Reader }{bytes.NewReader(b)} // not a seeker
			return content.Copy(context.Background(), w, r, int64(len(b)), digest.FromBytes(b))
		}},
		{"copy seeker", func(w content.Writer, b []byte, _ int64) error {
			return content.Copy(context.Background(), w, bytes.NewReader(b), int64(len(b)), digest.FromBytes(b))
		}},
	}
	for i, size := range []int64{500, 50_000, 1<<20 + 7} {
		for j, cut := range []float64{0, 0.1, 0.5, 1} {
			for k, m := range modes {
				t.Run(fmt.Sprintf("%d/%v/%s", size, cut, m.name), func(t *testing.T) {
					b, d := blob(size, uint64(i*100+j*10+k))
					written := int64(float64(size) * cut)
					ref := fmt.Sprintf("resume-%d-%d-%d", i, j, k)
					dd := ocispec.Descriptor{Digest: d, Size: size}
					start := time.Now()
					w1, err := e.cs.Writer(e.ctx, content.WithRef(ref), content.WithDescriptor(dd))
					if err != nil {
						t.Fatal(err)
					}
					started := time.Now()
					write(t, w1, b[:written])
					if err := w1.Close(); err != nil {
						t.Fatal(err)
					}

					w2 := e.writer(t, content.WithRef(ref), content.WithDescriptor(dd))
					st, err := w2.Status()
					if err != nil {
						t.Fatal(err)
					}
					if st.Ref != ref || st.Offset != written || st.Total != size || st.Expected != d {
						t.Fatalf("resumed status = %+v, want offset %d total %d expected %s", st, written, size, d)
					}
					checkTime(t, "resumed StartedAt", st.StartedAt, start, started)
					if got := w2.Digest(); got != digest.FromBytes(b[:written]) {
						t.Fatalf("resumed digest = %s, want digest of the %d bytes written", got, written)
					}
					if err := m.resume(w2, b, written); err != nil {
						t.Fatalf("resume: %v", err)
					}
					e.read(t, d, b)
				})
			}
		}
	}
}

func testTruncate(t *testing.T, e *env) {
	first, _ := blob(600_000, 1)
	second, d := blob(2000, 2)
	w := e.writer(t, content.WithRef("truncate"))
	write(t, w, first)
	if err := w.Truncate(0); err != nil {
		t.Fatal(err)
	}
	st, err := w.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Offset != 0 || w.Digest() != digest.FromBytes(nil) {
		t.Fatalf("after truncate: offset %d, digest %s", st.Offset, w.Digest())
	}
	write(t, w, second)
	if err := w.Commit(e.ctx, int64(len(second)), d); err != nil {
		t.Fatal(err)
	}
	e.read(t, d, second)
}

func testRefLocked(t *testing.T, e *env) {
	b, d := blob(1000, 3)
	w1 := e.writer(t, content.WithRef("locked"))
	write(t, w1, b[:10])
	_, err := e.cs.Writer(e.ctx, content.WithRef("locked"))
	wantErr(t, "second writer on a ref", err, errdefs.IsUnavailable, "unavailable")
	e.writer(t, content.WithRef("other")) // another ref is free

	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := e.writer(t, content.WithRef("locked"))
	if st, _ := w2.Status(); st.Offset != 10 {
		t.Errorf("offset after reopen = %d, want 10", st.Offset)
	}
	write(t, w2, b[10:])
	if err := w2.Commit(e.ctx, int64(len(b)), d); err != nil {
		t.Fatal(err)
	}
	// The ref is free again after a commit, and starts anew.
	w3 := e.writer(t, content.WithRef("locked"))
	if st, _ := w3.Status(); st.Offset != 0 {
		t.Errorf("offset of a committed ref reopened = %d, want 0", st.Offset)
	}
	// A closed writer refuses to work.
	if _, err := w1.Write(b); err == nil {
		t.Error("write on a closed writer succeeded")
	}
	if err := w1.Commit(e.ctx, 0, ""); err == nil {
		t.Error("commit on a closed writer succeeded")
	}
}

func testCommitMismatch(t *testing.T, e *env) {
	b, d := blob(4096, 4)
	_, other := blob(4096, 5)
	for _, tc := range []struct {
		name     string
		size     int64
		expected digest.Digest
	}{
		{"size too large", int64(len(b)) + 1, d},
		{"size too small", int64(len(b)) - 1, ""},
		{"digest", int64(len(b)), other},
		{"digest without size", 0, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := "mismatch-" + tc.name
			before := e.blobFiles(t)
			w := e.writer(t, content.WithRef(ref))
			write(t, w, b)
			err := w.Commit(e.ctx, tc.size, tc.expected)
			wantErr(t, "commit", err, errdefs.IsFailedPrecondition, "failed precondition")
			for _, dg := range []digest.Digest{d, other} {
				if _, err := e.cs.Info(e.ctx, dg); !errdefs.IsNotFound(err) {
					t.Errorf("info %s after failed commit: %v, want not found", dg, err)
				}
			}
			if after := e.blobFiles(t); !maps.Equal(before, after) {
				t.Errorf("files under blobs/ changed: %v, then %v", before, after)
			}
			// The ingest stays, to be retried.
			if st, err := e.cs.Status(e.ctx, ref); err != nil || st.Offset != int64(len(b)) {
				t.Fatalf("status after failed commit = %+v, %v", st, err)
			}
			w2 := e.writer(t, content.WithRef(ref))
			if err := w2.Commit(e.ctx, int64(len(b)), d); err != nil {
				t.Fatalf("retried commit: %v", err)
			}
			e.read(t, d, b)
			if err := e.cs.Delete(e.ctx, d); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func testCommitExists(t *testing.T, e *env) {
	b, d := blob(256, 6)
	e.put(t, "exists", b)
	for i, expected := range []digest.Digest{d, ""} {
		ref := fmt.Sprintf("exists-%d", i)
		w := e.writer(t, content.WithRef(ref))
		write(t, w, b)
		err := w.Commit(e.ctx, int64(len(b)), expected)
		wantErr(t, "commit of a present blob", err, errdefs.IsAlreadyExists, "already exists")
		if _, err := e.cs.Status(e.ctx, ref); !errdefs.IsNotFound(err) {
			t.Errorf("ingest after commit of a present blob: %v, want not found", err)
		}
	}
	_, err := e.cs.Writer(e.ctx, content.WithRef("exists-desc"), content.WithDescriptor(desc(b)))
	wantErr(t, "writer for a present blob", err, errdefs.IsAlreadyExists, "already exists")
	if err := content.WriteBlob(e.ctx, e.cs, "exists-again", bytes.NewReader(b), desc(b)); err != nil {
		t.Errorf("write blob of a present blob: %v, want success", err)
	}
	e.read(t, d, b)
}

func testLabels(t *testing.T, e *env) {
	if !e.labels {
		t.Skip("store keeps no labels")
	}
	b, d := blob(256, 7)
	initial := map[string]string{"k1": "v1", "k2": "v2", "containerd.io/gc.root": "x"}
	e.put(t, "labels", b, content.WithLabels(initial))
	info, err := e.cs.Info(e.ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(info.Labels, initial) {
		t.Fatalf("labels after commit = %v, want %v", info.Labels, initial)
	}
	created := info.CreatedAt

	for _, tc := range []struct {
		name   string
		labels map[string]string
		paths  []string
		want   map[string]string
	}{
		{"replace all", map[string]string{"k1": "new", "k3": "v3"}, nil,
			map[string]string{"k1": "new", "k3": "v3"}},
		{"some", map[string]string{"k1": "v1", "k4": "v4", "k9": "ignored"}, []string{"labels.k3", "labels.k1", "labels.k4"},
			map[string]string{"k1": "v1", "k4": "v4"}},
		{"one", map[string]string{"a.b/c": "d"}, []string{"labels.a.b/c"},
			map[string]string{"k1": "v1", "k4": "v4", "a.b/c": "d"}},
		{"labels", map[string]string{"only": "this"}, []string{"labels"},
			map[string]string{"only": "this"}},
		{"clear", nil, []string{"labels"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pre := time.Now()
			got, err := e.cs.Update(e.ctx, content.Info{Digest: d, Labels: tc.labels}, tc.paths...)
			if err != nil {
				t.Fatal(err)
			}
			post := time.Now()
			info, err := e.cs.Info(e.ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range []content.Info{got, info} {
				if len(i.Labels) != 0 || len(tc.want) != 0 {
					if !maps.Equal(i.Labels, tc.want) {
						t.Errorf("labels = %v, want %v", i.Labels, tc.want)
					}
				}
				if i.Size != int64(len(b)) || !i.CreatedAt.Equal(created) {
					t.Errorf("update changed size or creation: %+v", i)
				}
				checkTime(t, "UpdatedAt", i.UpdatedAt, pre, post)
			}
		})
	}

	_, err = e.cs.Update(e.ctx, content.Info{Digest: d, Size: 1}, "size")
	wantErr(t, "update of size", err, errdefs.IsInvalidArgument, "invalid argument")
	_, missing := blob(1, 99)
	_, err = e.cs.Update(e.ctx, content.Info{Digest: missing, Labels: map[string]string{"a": "b"}})
	wantErr(t, "update of a missing blob", err, errdefs.IsNotFound, "not found")
	_, err = e.cs.Update(e.ctx, content.Info{Digest: d, Labels: map[string]string{"big": strings.Repeat("x", 5000)}}, "labels.big")
	wantErr(t, "update with an oversized label", err, errdefs.IsInvalidArgument, "invalid argument")
}

func testWalk(t *testing.T, e *env) {
	var ds []digest.Digest
	for i := range 3 {
		b, _ := blob(100+int64(i), 10)
		var opts []content.Opt
		if e.labels {
			opts = append(opts, content.WithLabels(map[string]string{"k": fmt.Sprint("v", i%2), "n": fmt.Sprint(i)}))
		}
		ds = append(ds, e.put(t, fmt.Sprint("walk-", i), b, opts...))
	}
	walk := func(filters ...string) ([]digest.Digest, error) {
		var got []digest.Digest
		err := e.cs.Walk(e.ctx, func(info content.Info) error {
			got = append(got, info.Digest)
			return nil
		}, filters...)
		slices.Sort(got)
		return got, err
	}
	cases := []struct {
		filters []string
		want    []digest.Digest
	}{
		{nil, ds},
		{[]string{"digest==" + ds[1].String()}, ds[1:2]},
		{[]string{"digest==" + ds[0].String(), "digest==" + ds[2].String()}, []digest.Digest{ds[0], ds[2]}},
		{[]string{"digest!=" + ds[0].String()}, ds[1:]},
		{[]string{"digest==sha256:0000"}, nil},
	}
	if e.labels {
		cases = append(cases, []struct {
			filters []string
			want    []digest.Digest
		}{
			{[]string{"labels.k==v0"}, []digest.Digest{ds[0], ds[2]}},
			{[]string{"labels.k==v0,labels.n==2"}, ds[2:]},
			{[]string{"labels.k==v1", "labels.n==0"}, ds[:2]},
			{[]string{"labels.missing"}, nil},
			{[]string{"labels.n"}, ds},
		}...)
	}
	for _, tc := range cases {
		got, err := walk(tc.filters...)
		if err != nil {
			t.Fatalf("walk %q: %v", tc.filters, err)
		}
		want := slices.Sorted(slices.Values(tc.want))
		if !slices.Equal(got, want) {
			t.Errorf("walk %q = %v, want %v", tc.filters, got, want)
		}
	}

	stop := errors.New("stop")
	n := 0
	err := e.cs.Walk(e.ctx, func(content.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("walk stopped by its func: %d calls, %v", n, err)
	}
	_, err = walk("digest==,")
	wantErr(t, "walk with a malformed filter", err, errdefs.IsInvalidArgument, "invalid argument")
}

func testStatuses(t *testing.T, e *env) {
	start := time.Now()
	for i, ref := range []string{"status-a", "status-b", "other"} {
		b, d := blob(int64(100*(i+1)), 20)
		w := e.writer(t, content.WithRef(ref), content.WithDescriptor(ocispec.Descriptor{Digest: d, Size: int64(len(b))}))
		write(t, w, b[:50*(i+1)])
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now()
	st, err := e.cs.Status(e.ctx, "status-b")
	if err != nil {
		t.Fatal(err)
	}
	_, d := blob(200, 20)
	if st.Ref != "status-b" || st.Offset != 100 || st.Total != 200 || st.Expected != d {
		t.Errorf("status = %+v", st)
	}
	checkTime(t, "StartedAt", st.StartedAt, start, end)
	checkTime(t, "UpdatedAt", st.UpdatedAt, st.StartedAt, end)

	_, err = e.cs.Status(e.ctx, "missing")
	wantErr(t, "status of a missing ref", err, errdefs.IsNotFound, "not found")

	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"other", "status-a", "status-b"}},
		{[]string{"ref==status-a"}, []string{"status-a"}},
		{[]string{"ref~=^status-"}, []string{"status-a", "status-b"}},
		{[]string{"ref==other", "ref==status-b"}, []string{"other", "status-b"}},
		{[]string{"ref==none"}, nil},
	} {
		sts, err := e.cs.ListStatuses(e.ctx, tc.filters...)
		if err != nil {
			t.Fatalf("list %q: %v", tc.filters, err)
		}
		var got []string
		for _, st := range sts {
			got = append(got, st.Ref)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("list %q = %v, want %v", tc.filters, got, tc.want)
		}
	}
	_, err = e.cs.ListStatuses(e.ctx, "ref==")
	wantErr(t, "list with a malformed filter", err, errdefs.IsInvalidArgument, "invalid argument")
}

func testAbort(t *testing.T, e *env) {
	b, _ := blob(500, 30)
	w := e.writer(t, content.WithRef("abort"))
	write(t, w, b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.cs.Abort(e.ctx, "abort"); err != nil {
		t.Fatal(err)
	}
	_, err := e.cs.Status(e.ctx, "abort")
	wantErr(t, "status after abort", err, errdefs.IsNotFound, "not found")
	if sts, err := e.cs.ListStatuses(e.ctx); err != nil || len(sts) != 0 {
		t.Errorf("statuses after abort = %v, %v", sts, err)
	}
	err = e.cs.Abort(e.ctx, "abort")
	wantErr(t, "second abort", err, errdefs.IsNotFound, "not found")
	w = e.writer(t, content.WithRef("abort"))
	if st, _ := w.Status(); st.Offset != 0 {
		t.Errorf("offset of an aborted ref reopened = %d, want 0", st.Offset)
	}
}

func testDelete(t *testing.T, e *env) {
	b, d := blob(300, 40)
	keep, kd := blob(301, 40)
	e.put(t, "delete", b)
	e.put(t, "keep", keep)
	if err := e.cs.Delete(e.ctx, d); err != nil {
		t.Fatal(err)
	}
	_, err := e.cs.Info(e.ctx, d)
	wantErr(t, "info after delete", err, errdefs.IsNotFound, "not found")
	if err != nil && !strings.Contains(err.Error(), d.String()) {
		t.Errorf("not found error %q does not name the digest", err)
	}
	_, err = e.cs.ReaderAt(e.ctx, ocispec.Descriptor{Digest: d})
	wantErr(t, "reader after delete", err, errdefs.IsNotFound, "not found")
	err = e.cs.Delete(e.ctx, d)
	wantErr(t, "second delete", err, errdefs.IsNotFound, "not found")
	var seen []digest.Digest
	if err := e.cs.Walk(e.ctx, func(i content.Info) error { seen = append(seen, i.Digest); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []digest.Digest{kd}) {
		t.Errorf("walk after delete = %v, want only %s", seen, kd)
	}
	e.read(t, kd, keep)
	// Deleted content can be written again.
	e.put(t, "delete-again", b)
	e.read(t, d, b)
}

func testReaderAt(t *testing.T, e *env) {
	b, _ := blob(10_000, 50)
	e.put(t, "readerat", b)
	ra, err := e.cs.ReaderAt(e.ctx, desc(b))
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if ra.Size() != int64(len(b)) {
		t.Fatalf("size = %d, want %d", ra.Size(), len(b))
	}
	for _, tc := range []struct {
		off, n int64
		want   int64 // bytes read; fewer than n means io.EOF
	}{
		{0, 10, 10},
		{1234, 4000, 4000},
		{9990, 10, 10},
		{9995, 10, 5},
		{10_000, 1, 0},
		{0, 10_000, 10_000},
	} {
		p := make([]byte, tc.n)
		n, err := ra.ReadAt(p, tc.off)
		if int64(n) != tc.want || (n < len(p) && err != io.EOF) || (n == len(p) && err != nil && err != io.EOF) {
			t.Errorf("read %d at %d: %d bytes, %v; want %d", tc.n, tc.off, n, err, tc.want)
			continue
		}
		if !bytes.Equal(p[:n], b[tc.off:tc.off+int64(n)]) {
			t.Errorf("read %d at %d: wrong data", tc.n, tc.off)
		}
	}
	// A reader larger than the blob stops at its end (containerd's
	// SmallBlob case).
	small := []byte("foobar")
	e.put(t, "small", small)
	sra, err := e.cs.ReaderAt(e.ctx, desc(small))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(sra, 0, int64(len(small))+1))
	sra.Close()
	if err != nil || !bytes.Equal(got, small) {
		t.Errorf("section read of a small blob = %q, %v", got, err)
	}
}

// nonSeeker hides the io.Seeker of a reader.
type nonSeeker struct{ io.Reader }

func testLargeBlob(t *testing.T, e *env) {
	b, d := blob(8<<20, 60)
	if err := content.WriteBlob(e.ctx, e.cs, "large", nonSeeker{bytes.NewReader(b)}, desc(b)); err != nil {
		t.Fatal(err)
	}
	info, err := e.cs.Info(e.ctx, d)
	if err != nil || info.Size != int64(len(b)) {
		t.Fatalf("info = %+v, %v", info, err)
	}
	ra, err := e.cs.ReaderAt(e.ctx, desc(b))
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	v := d.Verifier()
	if _, err := io.Copy(v, io.NewSectionReader(ra, 0, ra.Size())); err != nil {
		t.Fatal(err)
	}
	if !v.Verified() {
		t.Fatal("large blob read back does not match its digest")
	}
}

func testBadDigests(t *testing.T, e *env) {
	hex := strings.Repeat("a", 64)
	for _, bad := range []digest.Digest{
		"",
		"sha256:../..",
		"sha256:../../../../etc/passwd",
		"../../" + digest.Digest(hex),
		"sha256:" + digest.Digest(hex[:63]),
		"sha256:" + digest.Digest(hex) + "a",
		"sha256:" + digest.Digest(strings.ToUpper(hex)),
		"sha256:" + digest.Digest(hex[:62]) + "/a",
		"sha512:" + digest.Digest(hex+hex),
		"SHA256:" + digest.Digest(hex),
		"sha256" + digest.Digest(hex),
		digest.Digest(hex),
	} {
		t.Run(string(bad), func(t *testing.T) {
			_, err := e.cs.Info(e.ctx, bad)
			wantErr(t, "info", err, errdefs.IsInvalidArgument, "invalid argument")
			err = e.cs.Delete(e.ctx, bad)
			wantErr(t, "delete", err, errdefs.IsInvalidArgument, "invalid argument")
			_, err = e.cs.ReaderAt(e.ctx, ocispec.Descriptor{Digest: bad})
			wantErr(t, "reader", err, errdefs.IsInvalidArgument, "invalid argument")
			_, err = e.cs.Update(e.ctx, content.Info{Digest: bad, Labels: map[string]string{"a": "b"}})
			wantErr(t, "update", err, errdefs.IsInvalidArgument, "invalid argument")
			if bad == "" {
				return // an empty descriptor digest means "unknown" to Writer and Commit
			}
			_, err = e.cs.Writer(e.ctx, content.WithRef("bad"), content.WithDescriptor(ocispec.Descriptor{Digest: bad}))
			wantErr(t, "writer", err, errdefs.IsInvalidArgument, "invalid argument")
			w := e.writer(t, content.WithRef("bad-commit"))
			write(t, w, []byte("x"))
			err = w.Commit(e.ctx, 1, bad)
			wantErr(t, "commit", err, errdefs.IsInvalidArgument, "invalid argument")
		})
	}
}

func testEmptyRef(t *testing.T, e *env) {
	_, err := e.cs.Writer(e.ctx)
	wantErr(t, "writer without ref", err, errdefs.IsInvalidArgument, "invalid argument")
	_, err = e.cs.Writer(e.ctx, content.WithRef(""))
	wantErr(t, "writer with empty ref", err, errdefs.IsInvalidArgument, "invalid argument")
}
