package metadata

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func testImage(name string) Image {
	return Image{
		Name:   name,
		Labels: map[string]string{"l": "1"},
		Target: ocispec.Descriptor{
			MediaType:   ocispec.MediaTypeImageManifest,
			Digest:      digest.FromString(name),
			Size:        422,
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
		},
	}
}

func TestImagesCRUD(t *testing.T) {
	s := openDB(t).Images()
	a := nsctx(t, "a")
	name := "docker.io/library/bb:latest"
	created, err := s.Create(a, testImage(name))
	if err != nil {
		t.Fatal(err)
	}
	if created.CreatedAt.IsZero() || !created.CreatedAt.Equal(created.UpdatedAt) {
		t.Errorf("timestamps = %v %v", created.CreatedAt, created.UpdatedAt)
	}
	_, err = s.Create(a, testImage(name))
	wantErr(t, "second create", err, errdefs.IsAlreadyExists)
	got, err := s.Get(a, name)
	if err != nil || got.Target.Digest != created.Target.Digest || got.Target.Size != 422 ||
		got.Target.MediaType != ocispec.MediaTypeImageManifest || !maps.Equal(got.Target.Annotations, created.Target.Annotations) ||
		!maps.Equal(got.Labels, created.Labels) || !got.CreatedAt.Equal(created.CreatedAt) {
		t.Fatalf("get = %+v %v, want %+v", got, err, created)
	}
	_, err = s.Get(nsctx(t, "b"), name)
	wantErr(t, "get in another namespace", err, errdefs.IsNotFound)
	_, err = s.Get(t.Context(), name)
	wantErr(t, "get without namespace", err, errdefs.IsFailedPrecondition)

	// Update of a missing image is NotFound: ctr import then creates it.
	_, err = s.Update(a, testImage("docker.io/library/other:1"), "target")
	wantErr(t, "update of a missing image", err, errdefs.IsNotFound)

	if err := s.Delete(a, name, digest.FromString("other")); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete with another target: %v", err)
	}
	if err := s.Delete(a, name, created.Target.Digest); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second delete", s.Delete(a, name, ""), errdefs.IsNotFound)
	_, err = s.Get(a, name)
	wantErr(t, "get after delete", err, errdefs.IsNotFound)
}

func TestImagesUpdateMasks(t *testing.T) {
	s := openDB(t).Images()
	a := nsctx(t, "a")
	name := "example.com/app:v1"
	base := testImage(name)
	base.Labels = map[string]string{"keep": "k", "drop": "d"}
	base.Target.Annotations = map[string]string{"ka": "1", "kb": "2"}
	created, err := s.Create(a, base)
	if err != nil {
		t.Fatal(err)
	}
	newTarget := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("index"), Size: 99,
		Annotations: map[string]string{"new": "n"}}
	for _, tc := range []struct {
		name       string
		upd        Image
		paths      []string
		wantLabels map[string]string
		wantTarget ocispec.Descriptor
	}{
		{"labels.key", Image{Labels: map[string]string{"add": "a", "keep": "ignored"}}, []string{"labels.add"},
			map[string]string{"keep": "k", "drop": "d", "add": "a"}, base.Target},
		{"labels.key removes", Image{}, []string{"labels.drop"},
			map[string]string{"keep": "k", "add": "a"}, base.Target},
		{"annotations.key", Image{Target: ocispec.Descriptor{Annotations: map[string]string{"kc": "3"}}}, []string{"annotations.kc", "annotations.ka"},
			map[string]string{"keep": "k", "add": "a"},
			ocispec.Descriptor{MediaType: base.Target.MediaType, Digest: base.Target.Digest, Size: base.Target.Size, Annotations: map[string]string{"kb": "2", "kc": "3"}}},
		{"annotations", Image{Target: ocispec.Descriptor{Annotations: map[string]string{"only": "o"}}}, []string{"annotations"},
			map[string]string{"keep": "k", "add": "a"},
			ocispec.Descriptor{MediaType: base.Target.MediaType, Digest: base.Target.Digest, Size: base.Target.Size, Annotations: map[string]string{"only": "o"}}},
		{"target", Image{Labels: map[string]string{"ignored": "x"}, Target: newTarget}, []string{"target"},
			map[string]string{"keep": "k", "add": "a"}, newTarget},
		{"labels", Image{Labels: map[string]string{"fresh": "f"}}, []string{"labels"},
			map[string]string{"fresh": "f"}, newTarget},
		{"no mask replaces all", base, nil, base.Labels, base.Target},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.upd.Name = name
			pre := time.Now()
			got, err := s.Update(a, tc.upd, tc.paths...)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := s.Get(a, name)
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range []Image{got, stored} {
				if !maps.Equal(img.Labels, tc.wantLabels) {
					t.Errorf("labels = %v, want %v", img.Labels, tc.wantLabels)
				}
				if img.Target.Digest != tc.wantTarget.Digest || img.Target.Size != tc.wantTarget.Size ||
					img.Target.MediaType != tc.wantTarget.MediaType || !maps.Equal(img.Target.Annotations, tc.wantTarget.Annotations) {
					t.Errorf("target = %+v, want %+v", img.Target, tc.wantTarget)
				}
				if !img.CreatedAt.Equal(created.CreatedAt) || img.UpdatedAt.Before(pre.Add(-time.Second)) {
					t.Errorf("timestamps = %v %v", img.CreatedAt, img.UpdatedAt)
				}
			}
		})
	}
	for _, tc := range []struct {
		what  string
		upd   Image
		paths []string
	}{
		{"unknown field", Image{}, []string{"name"}},
		{"bare labels.", Image{}, []string{"labels."}},
		{"target without digest", Image{}, []string{"target"}},
		{"oversized label", Image{Labels: map[string]string{"k": strings.Repeat("v", 4096)}}, []string{"labels.k"}},
	} {
		tc.upd.Name = name
		_, err := s.Update(a, tc.upd, tc.paths...)
		wantErr(t, tc.what, err, errdefs.IsInvalidArgument)
	}
}

func TestImagesValidation(t *testing.T) {
	s := openDB(t).Images()
	a := nsctx(t, "a")
	for _, tc := range []struct {
		what string
		mod  func(*Image)
	}{
		{"empty name", func(i *Image) { i.Name = "" }},
		{"NUL in name", func(i *Image) { i.Name = "a\x00b" }},
		{"newline in name", func(i *Image) { i.Name = "a\nb" }},
		{"long name", func(i *Image) { i.Name = strings.Repeat("n", MaxImageNameLength+1) }},
		{"traversal digest", func(i *Image) { i.Target.Digest = "sha256:../.." }},
		{"short digest", func(i *Image) { i.Target.Digest = "sha256:abc" }},
		{"sha512 digest", func(i *Image) { i.Target.Digest = digest.Digest("sha512:" + strings.Repeat("a", 128)) }},
		{"no size", func(i *Image) { i.Target.Size = 0 }},
		{"negative size", func(i *Image) { i.Target.Size = -1 }},
		{"no media type", func(i *Image) { i.Target.MediaType = "" }},
		{"oversized label", func(i *Image) { i.Labels = map[string]string{"k": strings.Repeat("v", 4096)} }},
		{"empty label key", func(i *Image) { i.Labels = map[string]string{"": "v"} }},
		{"oversized annotation", func(i *Image) { i.Target.Annotations = map[string]string{"k": strings.Repeat("v", MaxAnnotationSize)} }},
	} {
		img := testImage("docker.io/library/x:1")
		tc.mod(&img)
		_, err := s.Create(a, img)
		wantErr(t, tc.what, err, errdefs.IsInvalidArgument)
	}
	_, err := s.Get(a, "")
	wantErr(t, "get of an empty name", err, errdefs.IsInvalidArgument)
	if imgs, err := s.List(a); err != nil || len(imgs) != 0 {
		t.Errorf("images after refused creates: %v %v", imgs, err)
	}
}

func TestImagesList(t *testing.T) {
	s := openDB(t).Images()
	a := nsctx(t, "a")
	names := []string{"docker.io/library/a:1", "docker.io/library/b:1", "127.0.0.1:5000/bb:latest"}
	for i, n := range names {
		img := testImage(n)
		img.Labels = map[string]string{"i": string(rune('0' + i)), "dotted.key": "yes"}
		if i == 2 {
			img.Target.MediaType = ocispec.MediaTypeImageIndex
		}
		if _, err := s.Create(a, img); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{names[2], names[0], names[1]}},
		{[]string{"name==" + names[1]}, names[1:2]},
		{[]string{`name=="127.0.0.1:5000/bb:latest"`}, names[2:]},
		{[]string{"name~=|bb|"}, names[2:]},
		{[]string{"name~=/^docker/", "labels.i==2"}, []string{names[2], names[0], names[1]}},
		{[]string{"target.digest==" + digest.FromString(names[0]).String()}, names[:1]},
		{[]string{"target.mediatype==" + ocispec.MediaTypeImageIndex}, names[2:]},
		{[]string{"labels.i==1"}, names[1:2]},
		{[]string{"labels.dotted.key==yes,labels.i!=0"}, []string{names[2], names[1]}},
		{[]string{"annotations.org.opencontainers.image.ref.name==latest,name~=a:1"}, names[:1]},
		{[]string{"labels.missing"}, nil},
	} {
		imgs, err := s.List(a, tc.filters...)
		if err != nil {
			t.Fatalf("list %q: %v", tc.filters, err)
		}
		var got []string
		for _, img := range imgs {
			got = append(got, img.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("list %q = %v, want %v", tc.filters, got, tc.want)
		}
	}
	_, err := s.List(a, "name==")
	wantErr(t, "malformed filter", err, errdefs.IsInvalidArgument)
	if imgs, err := s.List(nsctx(t, "b")); err != nil || len(imgs) != 0 {
		t.Errorf("images in b: %v %v", imgs, err)
	}
}

func TestLeases(t *testing.T) {
	s := openDB(t).Leases()
	a := nsctx(t, "a")
	expire := map[string]string{"containerd.io/gc.expire": "2026-11-23T22:56:07Z"}
	for _, id := range []string{"178956091-TnaL", "41763729-SR_-", "/tmp/ctrd-research/mnt"} {
		l, err := s.Create(a, Lease{ID: id, Labels: expire})
		if err != nil {
			t.Fatalf("create %q: %v", id, err)
		}
		if l.CreatedAt.IsZero() || !maps.Equal(l.Labels, expire) {
			t.Errorf("created %+v", l)
		}
	}
	_, err := s.Create(a, Lease{ID: "178956091-TnaL"})
	wantErr(t, "second create", err, errdefs.IsAlreadyExists)
	for _, id := range []string{"", "a\x00b", strings.Repeat("x", 4097)} {
		_, err := s.Create(a, Lease{ID: id})
		wantErr(t, "create "+id, err, errdefs.IsInvalidArgument)
	}
	_, err = s.Create(a, Lease{ID: "big", Labels: map[string]string{"k": strings.Repeat("v", 4096)}})
	wantErr(t, "oversized label", err, errdefs.IsInvalidArgument)
	if _, err := s.Create(a, Lease{ID: "other", Labels: map[string]string{"team": "x"}}); err != nil {
		t.Fatal(err)
	}

	list := func(fs ...string) []string {
		t.Helper()
		ls, err := s.List(a, fs...)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, l := range ls {
			ids = append(ids, l.ID)
		}
		return ids
	}
	if got := list(); !slices.Equal(got, []string{"/tmp/ctrd-research/mnt", "178956091-TnaL", "41763729-SR_-", "other"}) {
		t.Errorf("list = %v", got)
	}
	if got := list("id==other", `id=="/tmp/ctrd-research/mnt"`); !slices.Equal(got, []string{"/tmp/ctrd-research/mnt", "other"}) {
		t.Errorf("list by id = %v", got)
	}
	if got := list("labels.team==x"); !slices.Equal(got, []string{"other"}) {
		t.Errorf("list by label = %v", got)
	}
	if got := list(`labels."containerd.io/gc.expire"`); len(got) != 3 {
		t.Errorf("list by label presence = %v", got)
	}
	if ls, _ := s.List(nsctx(t, "b")); len(ls) != 0 {
		t.Errorf("leases in b = %v", ls)
	}

	d := digest.FromString("x").String()
	add := []LeaseResource{
		{ID: d, Type: "content"},
		{ID: "tar-blobs/sha256/abc", Type: "ingests"},
		{ID: "extract-1 sha256:abc", Type: "snapshots/overlayfs"},
		{ID: "k2", Type: "snapshots/native"},
	}
	for _, r := range add {
		if err := s.AddResource(a, "other", r); err != nil {
			t.Fatalf("add %v: %v", r, err)
		}
		if err := s.AddResource(a, "other", r); err != nil {
			t.Fatalf("add %v again: %v", r, err)
		}
	}
	rs, err := s.ListResources(a, "other")
	if err != nil || !slices.Equal(rs, []LeaseResource{add[0], add[1], add[3], add[2]}) {
		t.Fatalf("resources = %v %v", rs, err)
	}
	for _, tc := range []struct {
		r  LeaseResource
		is func(error) bool
	}{
		{LeaseResource{ID: "sha256:../..", Type: "content"}, errdefs.IsInvalidArgument},
		{LeaseResource{ID: d, Type: "content/x"}, errdefs.IsInvalidArgument},
		{LeaseResource{ID: "k", Type: "snapshots"}, errdefs.IsInvalidArgument},
		{LeaseResource{ID: "k", Type: "snapshots/a/b"}, errdefs.IsInvalidArgument},
		{LeaseResource{ID: "", Type: "ingests"}, errdefs.IsInvalidArgument},
		{LeaseResource{ID: "k", Type: "images"}, errdefs.IsNotImplemented},
	} {
		wantErr(t, "add "+tc.r.Type, s.AddResource(a, "other", tc.r), tc.is)
	}
	wantErr(t, "add to a missing lease", s.AddResource(a, "missing", add[0]), errdefs.IsNotFound)
	_, err = s.ListResources(a, "missing")
	wantErr(t, "resources of a missing lease", err, errdefs.IsNotFound)

	for _, r := range add[1:3] {
		if err := s.DeleteResource(a, "other", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteResource(a, "other", add[1]); err != nil {
		t.Errorf("deleting a resource not held: %v", err)
	}
	if rs, _ := s.ListResources(a, "other"); !slices.Equal(rs, []LeaseResource{add[0], add[3]}) {
		t.Errorf("resources after delete = %v", rs)
	}
	wantErr(t, "delete resource of a missing lease", s.DeleteResource(a, "missing", add[0]), errdefs.IsNotFound)

	if err := s.Delete(a, "other"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second delete", s.Delete(a, "other"), errdefs.IsNotFound)
	wantErr(t, "delete in another namespace", s.Delete(nsctx(t, "b"), "178956091-TnaL"), errdefs.IsNotFound)
	_, err = s.List(t.Context())
	wantErr(t, "list without namespace", err, errdefs.IsFailedPrecondition)
}
