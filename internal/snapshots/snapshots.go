// Package snapshots defines snapshotters: stores of filesystem trees, each
// layered on a parent, that are handed out as mounts. It follows
// containerd's snapshots model, which its Snapshots service exposes
// unchanged.
//
// A snapshot is one of three kinds:
//
//   - Active: made by Prepare on an optional committed parent; writable
//     through its mounts; turned into a committed snapshot by Commit;
//   - View: made by View on an optional committed parent; read-only
//     mounts; can not be committed;
//   - Committed: made by Commit of an active snapshot; immutable; the only
//     kind that can be a parent. It has no mounts of its own: a View or
//     Prepare on it gives access to its contents.
//
// Active and view snapshots are named by their key, committed ones by the
// name given to Commit; both live in one namespace per snapshotter: a key
// or name is taken until the snapshot is removed. Keys and names are free,
// non-empty strings chosen by clients ("extract-1700000000-abcd
// sha256:…" has a space; "/tmp/x" has slashes) and are never used as paths.
//
// Invariants every Snapshotter keeps (checked by package testsuite):
//   - errors are errdefs classes: NotFound for an unknown key, parent or
//     name; AlreadyExists for a key or name taken; InvalidArgument for an
//     empty key or name, bad labels, a parent that is not committed (as
//     containerd) and Update of a field other than labels;
//     FailedPrecondition for Remove of a snapshot with children, Commit of
//     a snapshot that is not active and Mounts of a committed one;
//   - a snapshot's parent is fixed at creation and can not be removed while
//     the snapshot exists;
//   - labels are validated (key and value at most 4096 bytes together); a
//     label set to "" is removed; Commit does not carry the active
//     snapshot's labels over: the committed snapshot has the labels given
//     to Commit;
//   - Created and Updated are UTC; Commit sets both to the commit time;
//   - Cleanup removes what the snapshotter holds on disk that no snapshot
//     refers to (leftovers of a crash or of an interrupted removal), and
//     nothing else.
//
// Labels under LabelInheritPrefix are the ones containerd's metadata layer
// passes down to the snapshotter (FilterInheritedLabels); a snapshotter
// itself does not copy labels from parent to child. That filtering, and
// namespacing keys, is the job of the metadata layer above.
package snapshots

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/mount"
)

// Kind is the kind of a snapshot. The values are containerd's.
type Kind uint8

// The kinds of snapshots.
const (
	KindUnknown Kind = iota
	KindView
	KindActive
	KindCommitted
)

// ParseKind parses the name of a kind, in any case.
func ParseKind(s string) Kind {
	switch strings.ToLower(s) {
	case "view":
		return KindView
	case "active":
		return KindActive
	case "committed":
		return KindCommitted
	}
	return KindUnknown
}

// String returns "View", "Active", "Committed" or "Unknown".
func (k Kind) String() string {
	switch k {
	case KindView:
		return "View"
	case KindActive:
		return "Active"
	case KindCommitted:
		return "Committed"
	}
	return "Unknown"
}

// MarshalJSON writes the kind's name.
func (k Kind) MarshalJSON() ([]byte, error) {
	return json.Marshal(k.String())
}

// UnmarshalJSON reads a kind's name.
func (k *Kind) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*k = ParseKind(s)
	return nil
}

// Info describes a snapshot.
type Info struct {
	Kind    Kind
	Name    string // key of an active or view snapshot, name of a committed one
	Parent  string // name of the committed parent; "" for none
	Labels  map[string]string
	Created time.Time
	Updated time.Time
}

// Usage is what a snapshot takes on disk: for a committed snapshot, as
// measured at commit; for an active one, now; for a view, nothing. For a
// snapshot with a parent it counts only what the snapshot adds, if the
// snapshotter shares the parent's data (overlay), or the whole tree if it
// copies it (native).
type Usage struct {
	Inodes int64 // number of inodes
	Size   int64 // bytes of disk space
}

// Add adds o to u.
func (u *Usage) Add(o Usage) {
	u.Inodes += o.Inodes
	u.Size += o.Size
}

// WalkFunc is called by Walk for each snapshot.
type WalkFunc func(context.Context, Info) error

// Opt sets optional properties of a new or committed snapshot.
type Opt func(*Info) error

// WithLabels adds labels to the snapshot.
func WithLabels(labels map[string]string) Opt {
	return func(info *Info) error {
		if info.Labels == nil {
			info.Labels = make(map[string]string, len(labels))
		}
		maps.Copy(info.Labels, labels)
		return nil
	}
}

// Snapshotter stores snapshots. See the package documentation for the
// model and the invariants every implementation keeps. All methods are
// safe for concurrent use.
type Snapshotter interface {
	// Stat returns the info of the snapshot with the given key or name.
	Stat(ctx context.Context, key string) (Info, error)

	// Update changes the labels of the snapshot info.Name and returns its
	// new info. With no fieldpaths the labels are replaced by info.Labels;
	// "labels" does the same; "labels.<k>" sets (or, if info.Labels has no
	// k, removes) the one label k. Other field paths are InvalidArgument.
	Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error)

	// Usage returns the disk usage of the snapshot; see Usage.
	Usage(ctx context.Context, key string) (Usage, error)

	// Mounts returns the mounts of an active or view snapshot, the same
	// as Prepare or View returned.
	Mounts(ctx context.Context, key string) ([]mount.Mount, error)

	// Prepare creates an active snapshot with the given key on parent
	// ("" for none), which must be committed, and returns its mounts.
	Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error)

	// View creates a read-only view snapshot with the given key on
	// parent ("" for an empty one) and returns its mounts.
	View(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error)

	// Commit turns the active snapshot key into a committed snapshot
	// called name. key is gone afterwards; its contents must no longer be
	// mounted. Labels come from opts only.
	Commit(ctx context.Context, name, key string, opts ...Opt) error

	// Remove removes a snapshot of any kind that has no children, and
	// its data.
	Remove(ctx context.Context, key string) error

	// Walk calls fn for every snapshot that matches one of the filters
	// (containerd's filter language; fields kind, name, parent, labels.<k>).
	// No filter matches everything. fn may call the snapshotter.
	Walk(ctx context.Context, fn WalkFunc, filters ...string) error

	// Cleanup removes data on disk that no snapshot refers to.
	Cleanup(ctx context.Context) error

	// Close releases the snapshotter. Closing twice is not an error.
	Close() error
}

// MaxKeyLength bounds keys and names, in bytes. The metadata layer's
// namespaced keys (namespace, an id and the client's key) must fit.
const MaxKeyLength = 8192

// ValidateKey checks a key or name given to a snapshotter.
func ValidateKey(what, key string) error {
	if key == "" {
		return fmt.Errorf("snapshot %s must not be empty: %w", what, errdefs.ErrInvalidArgument)
	}
	if len(key) > MaxKeyLength {
		return fmt.Errorf("snapshot %s of %d bytes is longer than %d: %w", what, len(key), MaxKeyLength, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ParseFilters parses Walk filters; errors are InvalidArgument.
func ParseFilters(fs ...string) (filters.Filter, error) {
	return filters.ParseAll(fs...)
}

// AdaptInfo exposes an Info to filters: "kind" ("active", "view",
// "committed"), "name", "parent" and "labels.<key>".
func AdaptInfo(info Info) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		switch fieldpath[0] {
		case "kind":
			switch info.Kind {
			case KindView, KindActive, KindCommitted:
				return strings.ToLower(info.Kind.String()), true
			}
			return "", false
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "labels":
			return filters.LabelField(info.Labels, fieldpath[1:])
		}
		return "", false
	})
}

// Label conventions of containerd that concern snapshots.
const (
	// LabelInheritPrefix starts the labels the metadata layer passes on
	// to snapshotters.
	LabelInheritPrefix = "containerd.io/snapshot/"
	// LabelSnapshotRef names the snapshot a remote snapshotter should
	// provide; it is passed on too.
	LabelSnapshotRef = "containerd.io/snapshot.ref"
)

// FilterInheritedLabels returns the labels that the metadata layer passes
// on to a snapshotter: those under LabelInheritPrefix and
// LabelSnapshotRef. It returns nil when there are none.
func FilterInheritedLabels(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if strings.HasPrefix(k, LabelInheritPrefix) || k == LabelSnapshotRef {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// Keys used by clients when unpacking images: "extract-<nanos>-<rand>
// <chainID>" (containerd's snapshots.UnpackKeyFormat).
const (
	UnpackKeyPrefix = "extract"
	UnpackKeyFormat = UnpackKeyPrefix + "-%s %s"
)
