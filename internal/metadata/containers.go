package metadata

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Container is a container record: what to run, not a running process.
type Container struct {
	ID          string
	Labels      map[string]string
	Image       string
	Runtime     Runtime
	Spec        *anypb.Any
	Snapshotter string
	SnapshotKey string
	Sandbox     string
	Extensions  map[string]*anypb.Any
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Runtime names the shim that runs a container and its options.
type Runtime struct {
	Name    string
	Options *anypb.Any
}

var (
	keySpec        = []byte("spec")
	keyImage       = []byte("image")
	keySnapshotter = []byte("snapshotter")
	keySnapshotKey = []byte("snapshotKey")
	keySandbox     = []byte("sandbox")
	keyName        = []byte("name")
	keyOptions     = []byte("options")
	bucketRuntime  = []byte("runtime")
	bucketExt      = []byte("extensions")
)

// Containers manages container records of the namespace in each call's
// context.
type Containers struct{ db *DB }

// Containers returns the container store.
func (db *DB) Containers() *Containers { return &Containers{db: db} }

func validateContainer(c *Container) error {
	if err := identifiers.Validate(c.ID); err != nil {
		return fmt.Errorf("container id: %w", err)
	}
	if err := labels.ValidateAll(c.Labels); err != nil {
		return fmt.Errorf("container %q: %w", c.ID, err)
	}
	for name, ext := range c.Extensions {
		if name == "" || ext == nil {
			return fmt.Errorf("container %q: extension %q must have a name and a value: %w", c.ID, name, errdefs.ErrInvalidArgument)
		}
	}
	switch {
	case c.Runtime.Name == "":
		return fmt.Errorf("container %q: runtime name must be set: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.Spec == nil:
		return fmt.Errorf("container %q: spec must be set: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.SnapshotKey != "" && c.Snapshotter == "":
		return fmt.Errorf("container %q: snapshot key %q needs a snapshotter: %w", c.ID, c.SnapshotKey, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Create stores a new container; AlreadyExists if the ID is taken.
func (s *Containers) Create(ctx context.Context, c Container) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	if err := validateContainer(&c); err != nil {
		return Container{}, err
	}
	now := time.Now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		cb, err := createBucketPath(tx, ns, bucketContainer)
		if err != nil {
			return err
		}
		if cb.Bucket([]byte(c.ID)) != nil {
			return fmt.Errorf("container %q in namespace %q: %w", c.ID, ns, errdefs.ErrAlreadyExists)
		}
		b, err := cb.CreateBucket([]byte(c.ID))
		if err != nil {
			return err
		}
		return writeContainer(b, &c)
	})
	if err != nil {
		return Container{}, err
	}
	return c, nil
}

// Get returns one container; NotFound if missing.
func (s *Containers) Get(ctx context.Context, id string) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	if err := identifiers.Validate(id); err != nil {
		return Container{}, fmt.Errorf("container id: %w", err)
	}
	var c Container
	err = s.db.View(func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketContainer, []byte(id))
		if b == nil {
			return fmt.Errorf("container %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		c, err = readContainer(id, b)
		return err
	})
	return c, err
}

// List returns the containers matching any of fs, sorted by ID.
func (s *Containers) List(ctx context.Context, fs ...string) ([]Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filters.ParseAll(fs...)
	if err != nil {
		return nil, err
	}
	var out []Container
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := bucketPath(tx, ns, bucketContainer)
		if cb == nil {
			return nil
		}
		return cb.ForEachBucket(func(k []byte) error {
			c, err := readContainer(string(k), cb.Bucket(k))
			if err != nil {
				return err
			}
			if f.Match(containerAdaptor(&c)) {
				out = append(out, c)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

func containerAdaptor(c *Container) filters.Adaptor {
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		if len(fp) == 0 {
			return "", false
		}
		switch fp[0] {
		case "id":
			return c.ID, c.ID != ""
		case "image":
			return c.Image, c.Image != ""
		case "runtime":
			if len(fp) == 2 && fp[1] == "name" {
				return c.Runtime.Name, c.Runtime.Name != ""
			}
		case "labels":
			return filters.LabelField(c.Labels, fp[1:])
		}
		return "", false
	})
}

// Update changes the fields of a container named by paths: labels,
// labels.<key>, spec, extensions, extensions.<name>, image, snapshotkey. With
// no paths, those fields are replaced together, and a changed snapshotter or
// runtime name is InvalidArgument: they are immutable.
func (s *Containers) Update(ctx context.Context, c Container, paths ...string) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	if err := identifiers.Validate(c.ID); err != nil {
		return Container{}, fmt.Errorf("container id: %w", err)
	}
	var result Container
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		b := bucketPath(tx, ns, bucketContainer, []byte(c.ID))
		if b == nil {
			return fmt.Errorf("container %q in namespace %q: %w", c.ID, ns, errdefs.ErrNotFound)
		}
		cur, err := readContainer(c.ID, b)
		if err != nil {
			return err
		}
		next, err := applyContainerUpdate(cur, c, paths)
		if err != nil {
			return err
		}
		if err := validateContainer(&next); err != nil {
			return err
		}
		next.UpdatedAt = time.Now().UTC()
		result = next
		return writeContainer(b, &next)
	})
	return result, err
}

func applyContainerUpdate(cur, upd Container, paths []string) (Container, error) {
	next := cur
	if len(paths) == 0 {
		if upd.Snapshotter != cur.Snapshotter {
			return Container{}, fmt.Errorf("container %q: snapshotter is immutable: %w", cur.ID, errdefs.ErrInvalidArgument)
		}
		if upd.Runtime.Name != cur.Runtime.Name {
			return Container{}, fmt.Errorf("container %q: runtime name is immutable: %w", cur.ID, errdefs.ErrInvalidArgument)
		}
		paths = []string{"labels", "spec", "extensions", "image", "snapshotkey"}
	}
	var labelPaths []string
	next.Extensions = copyAnys(cur.Extensions)
	for _, p := range paths {
		switch {
		case p == "labels" || strings.HasPrefix(p, "labels."):
			labelPaths = append(labelPaths, p)
		case strings.HasPrefix(p, "extensions."):
			name := strings.TrimPrefix(p, "extensions.")
			if e, ok := upd.Extensions[name]; ok && e != nil {
				next.Extensions[name] = e
			} else {
				delete(next.Extensions, name)
			}
		case p == "extensions":
			next.Extensions = copyAnys(upd.Extensions)
		case p == "spec":
			next.Spec = upd.Spec
		case p == "image":
			next.Image = upd.Image
		case p == "snapshotkey":
			next.SnapshotKey = upd.SnapshotKey
		default:
			return Container{}, fmt.Errorf("cannot update field %q of container %q: %w", p, cur.ID, errdefs.ErrInvalidArgument)
		}
	}
	if len(labelPaths) > 0 {
		l, err := applyLabelPaths("container", cur.ID, cur.Labels, upd.Labels, labelPaths)
		if err != nil {
			return Container{}, err
		}
		next.Labels = l
	}
	return next, nil
}

func copyAnys(m map[string]*anypb.Any) map[string]*anypb.Any {
	out := make(map[string]*anypb.Any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Delete removes a container record; NotFound if missing.
func (s *Containers) Delete(ctx context.Context, id string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := identifiers.Validate(id); err != nil {
		return fmt.Errorf("container id: %w", err)
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		cb := bucketPath(tx, ns, bucketContainer)
		if cb == nil || cb.Bucket([]byte(id)) == nil {
			return fmt.Errorf("container %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		return cb.DeleteBucket([]byte(id))
	})
}

func writeContainer(b *bolt.Bucket, c *Container) error {
	if err := putTime(b, keyCreatedAt, c.CreatedAt); err != nil {
		return err
	}
	if err := putTime(b, keyUpdatedAt, c.UpdatedAt); err != nil {
		return err
	}
	spec, err := proto.Marshal(c.Spec)
	if err != nil {
		return err
	}
	for k, v := range map[string][]byte{
		string(keySpec):        spec,
		string(keyImage):       []byte(c.Image),
		string(keySnapshotter): []byte(c.Snapshotter),
		string(keySnapshotKey): []byte(c.SnapshotKey),
		string(keySandbox):     []byte(c.Sandbox),
	} {
		if len(v) == 0 {
			err = b.Delete([]byte(k))
		} else {
			err = b.Put([]byte(k), v)
		}
		if err != nil {
			return err
		}
	}
	for _, sub := range [][]byte{bucketRuntime, bucketExt} {
		if b.Bucket(sub) != nil {
			if err := b.DeleteBucket(sub); err != nil {
				return err
			}
		}
	}
	rb, err := b.CreateBucket(bucketRuntime)
	if err != nil {
		return err
	}
	if err := rb.Put(keyName, []byte(c.Runtime.Name)); err != nil {
		return err
	}
	if c.Runtime.Options != nil {
		o, err := proto.Marshal(c.Runtime.Options)
		if err != nil {
			return err
		}
		if err := rb.Put(keyOptions, o); err != nil {
			return err
		}
	}
	if len(c.Extensions) > 0 {
		eb, err := b.CreateBucket(bucketExt)
		if err != nil {
			return err
		}
		for name, e := range c.Extensions {
			v, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			if err := eb.Put([]byte(name), v); err != nil {
				return err
			}
		}
	}
	return writeLabels(b, c.Labels)
}

func readContainer(id string, b *bolt.Bucket) (Container, error) {
	c := Container{
		ID:          id,
		Labels:      readLabels(b),
		Image:       string(b.Get(keyImage)),
		Snapshotter: string(b.Get(keySnapshotter)),
		SnapshotKey: string(b.Get(keySnapshotKey)),
		Sandbox:     string(b.Get(keySandbox)),
		CreatedAt:   getTime(b, keyCreatedAt),
		UpdatedAt:   getTime(b, keyUpdatedAt),
	}
	unmarshal := func(v []byte) (*anypb.Any, error) {
		a := &anypb.Any{}
		if err := proto.Unmarshal(v, a); err != nil {
			return nil, fmt.Errorf("container %q: corrupt record: %v: %w", id, err, errdefs.ErrDataLoss)
		}
		return a, nil
	}
	var err error
	if v := b.Get(keySpec); v != nil {
		if c.Spec, err = unmarshal(v); err != nil {
			return c, err
		}
	}
	if rb := b.Bucket(bucketRuntime); rb != nil {
		c.Runtime.Name = string(rb.Get(keyName))
		if v := rb.Get(keyOptions); v != nil {
			if c.Runtime.Options, err = unmarshal(v); err != nil {
				return c, err
			}
		}
	}
	if eb := b.Bucket(bucketExt); eb != nil {
		c.Extensions = map[string]*anypb.Any{}
		err = eb.ForEach(func(k, v []byte) error {
			a, err := unmarshal(v)
			c.Extensions[string(k)] = a
			return err
		})
	}
	return c, err
}
