package local

import (
	"maps"
	"sync"

	digest "github.com/opencontainers/go-digest"
)

// MemoryLabels is a LabelStore in memory, for tests and for stores whose
// labels need not survive a restart.
type MemoryLabels struct {
	mu sync.Mutex
	m  map[digest.Digest]map[string]string
}

// NewMemoryLabels returns an empty MemoryLabels.
func NewMemoryLabels() *MemoryLabels {
	return &MemoryLabels{m: map[digest.Digest]map[string]string{}}
}

// Get implements LabelStore; the map returned is a copy.
func (l *MemoryLabels) Get(dgst digest.Digest) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m[dgst]), nil
}

// Set implements LabelStore; it keeps a copy of labels.
func (l *MemoryLabels) Set(dgst digest.Digest, labels map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(labels) == 0 {
		delete(l.m, dgst)
	} else {
		l.m[dgst] = maps.Clone(labels)
	}
	return nil
}
