// Package version holds berth's version, set at build time with -ldflags
// "-X github.com/berth-dev/berth/internal/version.Version=...".
package version

var (
	// Version is the release, or a development marker.
	Version = "0.1.0-dev"
	// Revision is the VCS revision built.
	Revision = "unknown"
)
