// Package identifiers validates the names clients give to objects: namespaces,
// containers, leases, tasks and execs.
//
// Invariant: a name that passes Validate is safe to use as a single path
// element and as a bbolt key. It matches
// ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$ and is 1 to 76 bytes long, the rule
// containerd applies, so a name valid for one is valid for the other.
package identifiers

import (
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
)

// MaxLength is the longest identifier accepted.
const MaxLength = 76

var identifierRe = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// Validate returns an error wrapping errdefs.ErrInvalidArgument when s is not
// a valid identifier.
func Validate(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("identifier must not be empty: %w", errdefs.ErrInvalidArgument)
	case len(s) > MaxLength:
		return fmt.Errorf("identifier %q is %d characters, longer than %d: %w", s, len(s), MaxLength, errdefs.ErrInvalidArgument)
	case !identifierRe.MatchString(s):
		return fmt.Errorf("identifier %q must match %v: %w", s, identifierRe, errdefs.ErrInvalidArgument)
	}
	return nil
}
