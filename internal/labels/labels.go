// Package labels bounds the labels clients attach to objects.
//
// Invariant: every label that reaches the metadata store has a non-empty key
// and len(key)+len(value) of at most MaxSize bytes.
package labels

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// MaxSize is the largest key plus value accepted, in bytes.
const MaxSize = 4096

// Validate checks one label.
func Validate(k, v string) error {
	if k == "" {
		return fmt.Errorf("label key must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(k)+len(v) > MaxSize {
		short := k
		if len(short) > 64 {
			short = short[:64] + "…"
		}
		return fmt.Errorf("label key and value of %q are %d bytes, more than %d: %w", short, len(k)+len(v), MaxSize, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ValidateAll checks every label of a set.
func ValidateAll(m map[string]string) error {
	for k, v := range m {
		if err := Validate(k, v); err != nil {
			return err
		}
	}
	return nil
}
