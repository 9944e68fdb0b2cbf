package metadata

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// Image is an image record: a name for a target descriptor (an index or a
// manifest) in the content store. Image names are references such as
// docker.io/library/busybox:latest, not identifiers.
type Image struct {
	Name      string
	Labels    map[string]string
	Target    ocispec.Descriptor
	CreatedAt time.Time
	UpdatedAt time.Time
}

var (
	bucketImages      = []byte("images")
	bucketTarget      = []byte("target")
	bucketAnnotations = []byte("annotations")
	keyDigest         = []byte("digest")
	keyMediaType      = []byte("mediatype")
)

// MaxImageNameLength bounds image names, in bytes.
const MaxImageNameLength = 4096

// MaxAnnotationSize bounds len(key)+len(value) of a target annotation.
const MaxAnnotationSize = 16 << 10

// Images manages the image records of the namespace in each call's context.
type Images struct{ db *DB }

// Images returns the image store.
func (db *DB) Images() *Images { return &Images{db: db} }

func validateImageName(name string) error {
	return validateKey("image name", name, MaxImageNameLength)
}

func validateImage(img *Image) error {
	if err := validateImageName(img.Name); err != nil {
		return err
	}
	if err := labels.ValidateAll(img.Labels); err != nil {
		return fmt.Errorf("image %q: %w", img.Name, err)
	}
	t := &img.Target
	if err := content.ValidateDigest(t.Digest); err != nil {
		return fmt.Errorf("image %q: target: %w", img.Name, err)
	}
	if t.Size <= 0 {
		return fmt.Errorf("image %q: target size must be greater than zero: %w", img.Name, errdefs.ErrInvalidArgument)
	}
	if t.MediaType == "" {
		return fmt.Errorf("image %q: target media type must be set: %w", img.Name, errdefs.ErrInvalidArgument)
	}
	for k, v := range t.Annotations {
		if k == "" || len(k)+len(v) > MaxAnnotationSize {
			return fmt.Errorf("image %q: target annotation %.64q: key must be set and key and value at most %d bytes: %w", img.Name, k, MaxAnnotationSize, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func imageNotFound(name, ns string) error {
	return fmt.Errorf("image %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
}

// Get returns one image; NotFound if missing.
func (s *Images) Get(ctx context.Context, name string) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	if err := validateImageName(name); err != nil {
		return Image{}, err
	}
	var img Image
	err = s.db.View(func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketImages, []byte(name))
		if b == nil {
			return imageNotFound(name, ns)
		}
		img = readImage(name, b)
		return nil
	})
	return img, err
}

// List returns the images matching any of fs, sorted by name. Fields: name,
// target.digest, target.mediatype, labels.<key>, annotations.<key>.
func (s *Images) List(ctx context.Context, fs ...string) ([]Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filters.ParseAll(fs...)
	if err != nil {
		return nil, err
	}
	var out []Image
	err = s.db.View(func(tx *bolt.Tx) error {
		ib := bucketPath(tx, ns, bucketImages)
		if ib == nil {
			return nil
		}
		return ib.ForEachBucket(func(k []byte) error {
			img := readImage(string(k), ib.Bucket(k))
			if f.Match(imageAdaptor(&img)) {
				out = append(out, img)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

func imageAdaptor(img *Image) filters.Adaptor {
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		switch fp[0] {
		case "name":
			return img.Name, img.Name != ""
		case "target":
			if len(fp) != 2 {
				return "", false
			}
			switch fp[1] {
			case "digest":
				return img.Target.Digest.String(), img.Target.Digest != ""
			case "mediatype":
				return img.Target.MediaType, img.Target.MediaType != ""
			}
		case "labels":
			return filters.LabelField(img.Labels, fp[1:])
		case "annotations":
			return filters.LabelField(img.Target.Annotations, fp[1:])
		}
		return "", false
	})
}

// Create stores a new image; AlreadyExists if the name is taken. Its
// timestamps are set here.
func (s *Images) Create(ctx context.Context, img Image) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	if err := validateImage(&img); err != nil {
		return Image{}, err
	}
	now := time.Now().UTC()
	img.CreatedAt, img.UpdatedAt = now, now
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		ib, err := createBucketPath(tx, ns, bucketImages)
		if err != nil {
			return err
		}
		if ib.Bucket([]byte(img.Name)) != nil {
			return fmt.Errorf("image %q in namespace %q: %w", img.Name, ns, errdefs.ErrAlreadyExists)
		}
		b, err := ib.CreateBucket([]byte(img.Name))
		if err != nil {
			return err
		}
		return writeImage(b, &img)
	})
	if err != nil {
		return Image{}, err
	}
	return img, nil
}

// Update changes the fields of image img.Name named by paths, in order:
// "target" (replaced as a whole, with its annotations), "labels",
// "labels.<key>", "annotations", "annotations.<key>"; for one key, an
// empty or missing value removes it. With no paths, labels and target are
// replaced. NotFound if the image does not exist: clients (ctr import,
// pull) then create it.
func (s *Images) Update(ctx context.Context, img Image, paths ...string) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	if err := validateImageName(img.Name); err != nil {
		return Image{}, err
	}
	var result Image
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketImages, []byte(img.Name))
		if b == nil {
			return imageNotFound(img.Name, ns)
		}
		cur := readImage(img.Name, b)
		next, err := applyImageUpdate(cur, img, paths)
		if err != nil {
			return err
		}
		if err := validateImage(&next); err != nil {
			return err
		}
		next.CreatedAt = cur.CreatedAt
		next.UpdatedAt = time.Now().UTC()
		result = next
		return writeImage(b, &next)
	})
	return result, err
}

func applyImageUpdate(cur, upd Image, paths []string) (Image, error) {
	if len(paths) == 0 {
		next := upd
		next.Labels = copyMap(upd.Labels)
		next.Target.Annotations = copyMap(upd.Target.Annotations)
		return next, nil
	}
	next := cur
	next.Labels = copyMap(cur.Labels)
	next.Target.Annotations = copyMap(cur.Target.Annotations)
	setKey := func(m map[string]string, k, v string) map[string]string {
		if m == nil {
			m = map[string]string{}
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, p := range paths {
		switch {
		case p == "target":
			next.Target = upd.Target
			next.Target.Annotations = copyMap(upd.Target.Annotations)
		case p == "labels":
			next.Labels = copyMap(upd.Labels)
		case p == "annotations":
			next.Target.Annotations = copyMap(upd.Target.Annotations)
		case strings.HasPrefix(p, "labels.") && len(p) > len("labels."):
			k := strings.TrimPrefix(p, "labels.")
			next.Labels = setKey(next.Labels, k, upd.Labels[k])
		case strings.HasPrefix(p, "annotations.") && len(p) > len("annotations."):
			k := strings.TrimPrefix(p, "annotations.")
			next.Target.Annotations = setKey(next.Target.Annotations, k, upd.Target.Annotations[k])
		default:
			return Image{}, fmt.Errorf("cannot update field %q of image %q: %w", p, cur.Name, errdefs.ErrInvalidArgument)
		}
	}
	return next, nil
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// Delete removes an image record; NotFound if missing. With target set, the
// image is removed only if its target has that digest, else
// FailedPrecondition. What the image referred to becomes collectable;
// removing it is the garbage collector's job.
func (s *Images) Delete(ctx context.Context, name string, target digest.Digest) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := validateImageName(name); err != nil {
		return err
	}
	if target != "" {
		if err := content.ValidateDigest(target); err != nil {
			return fmt.Errorf("image %q: target: %w", name, err)
		}
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		ib := bucketPath(tx, ns, bucketImages)
		if ib == nil || ib.Bucket([]byte(name)) == nil {
			return imageNotFound(name, ns)
		}
		if target != "" {
			if cur := readImage(name, ib.Bucket([]byte(name))); cur.Target.Digest != target {
				return fmt.Errorf("image %q in namespace %q has target %s, not %s: %w", name, ns, cur.Target.Digest, target, errdefs.ErrFailedPrecondition)
			}
		}
		return ib.DeleteBucket([]byte(name))
	})
}

func readImage(name string, b *bolt.Bucket) Image {
	img := Image{
		Name:      name,
		Labels:    readLabels(b),
		CreatedAt: getTime(b, keyCreatedAt),
		UpdatedAt: getTime(b, keyUpdatedAt),
	}
	if tb := b.Bucket(bucketTarget); tb != nil {
		img.Target.Digest = digest.Digest(tb.Get(keyDigest))
		img.Target.MediaType = string(tb.Get(keyMediaType))
		if v := tb.Get(keySize); v != nil {
			img.Target.Size, _ = binary.Varint(v)
		}
	}
	if ab := b.Bucket(bucketAnnotations); ab != nil {
		img.Target.Annotations = map[string]string{}
		_ = ab.ForEach(func(k, v []byte) error {
			img.Target.Annotations[string(k)] = string(v)
			return nil
		})
	}
	return img
}

func writeImage(b *bolt.Bucket, img *Image) error {
	if err := putTime(b, keyCreatedAt, img.CreatedAt); err != nil {
		return err
	}
	if err := putTime(b, keyUpdatedAt, img.UpdatedAt); err != nil {
		return err
	}
	if err := writeLabels(b, img.Labels); err != nil {
		return err
	}
	for _, sub := range [][]byte{bucketTarget, bucketAnnotations} {
		if b.Bucket(sub) != nil {
			if err := b.DeleteBucket(sub); err != nil {
				return err
			}
		}
	}
	tb, err := b.CreateBucket(bucketTarget)
	if err != nil {
		return err
	}
	for k, v := range map[string][]byte{
		string(keyDigest):    []byte(img.Target.Digest),
		string(keyMediaType): []byte(img.Target.MediaType),
		string(keySize):      binary.AppendVarint(nil, img.Target.Size),
	} {
		if err := tb.Put([]byte(k), v); err != nil {
			return err
		}
	}
	if len(img.Target.Annotations) == 0 {
		return nil
	}
	ab, err := b.CreateBucket(bucketAnnotations)
	if err != nil {
		return err
	}
	for k, v := range img.Target.Annotations {
		if v == "" {
			continue
		}
		if err := ab.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}
