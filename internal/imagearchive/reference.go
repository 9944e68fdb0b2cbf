package imagearchive

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
)

// A subset of docker's reference grammar (distribution/reference): enough
// to normalize the RepoTags of `docker save` and to familiarize names for
// docker's manifest.json.
var (
	refComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	refDomain    = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?$`)
	refTag       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

const (
	dockerDomain  = "docker.io"
	legacyDomain  = "index.docker.io"
	officialRepos = "library/"
	maxRefLength  = 255 + 128 + 80 // name, tag and a digest
)

// reference is a parsed image reference.
type reference struct {
	domain string
	path   string
	tag    string
	digest string
}

func (r reference) String() string {
	s := r.domain + "/" + r.path
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

// parseNormalized parses a reference as docker does ("busybox",
// "user/app:1", "registry:5000/app@sha256:…"), filling in docker.io,
// library/ and, without a tag or digest, the tag latest.
func parseNormalized(s string) (reference, error) {
	bad := func(why string) (reference, error) {
		return reference{}, fmt.Errorf("invalid image reference %q: %s: %w", s, why, errdefs.ErrInvalidArgument)
	}
	if s == "" || len(s) > maxRefLength {
		return bad("empty or too long")
	}
	var r reference
	name := s
	if i := strings.Index(name, "@"); i >= 0 {
		r.digest = name[i+1:]
		name = name[:i]
		if !strings.HasPrefix(r.digest, "sha256:") || len(r.digest) != len("sha256:")+64 || strings.Trim(r.digest[7:], "0123456789abcdef") != "" {
			return bad("bad digest")
		}
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		r.tag = name[i+1:]
		name = name[:i]
		if !refTag.MatchString(r.tag) {
			return bad("bad tag")
		}
	}
	domain, rest, ok := strings.Cut(name, "/")
	if !ok || (!strings.ContainsAny(domain, ".:") && domain != "localhost" && strings.ToLower(domain) == domain) {
		domain, rest = dockerDomain, name
	}
	if !refDomain.MatchString(domain) {
		return bad("bad registry")
	}
	if domain == legacyDomain {
		domain = dockerDomain
	}
	if domain == dockerDomain && !strings.Contains(rest, "/") {
		rest = officialRepos + rest
	}
	for _, c := range strings.Split(rest, "/") {
		if !refComponent.MatchString(c) {
			return bad("bad repository name")
		}
	}
	r.domain, r.path = domain, rest
	if r.tag == "" && r.digest == "" {
		r.tag = "latest"
	}
	return r, nil
}

// NormalizeReference is the full form of a docker reference:
// "busybox" → "docker.io/library/busybox:latest".
func NormalizeReference(s string) (string, error) {
	r, err := parseNormalized(s)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// FamiliarTag is the short form docker shows for a tagged reference
// ("docker.io/library/busybox:latest" → "busybox:latest"); ok is false
// for names docker cannot load as a tag (digest references, bad names).
func FamiliarTag(name string) (tag string, ok bool) {
	r, err := parseNormalized(name)
	if err != nil || r.digest != "" || strings.LastIndex(name, ":") < strings.LastIndex(name, "/") {
		return "", false
	}
	path := r.path
	if r.domain == dockerDomain {
		path = strings.TrimPrefix(path, officialRepos)
		return path + ":" + r.tag, true
	}
	return r.domain + "/" + path + ":" + r.tag, true
}

// refName is the OCI ref name of an image name: its tag (containerd's
// ociReferenceName), else its digest, else the name itself.
func refName(name string) string {
	at := ""
	if i := strings.Index(name, "@"); i >= 0 {
		name, at = name[:i], name[i+1:]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[i+1:]
	}
	if at != "" {
		return at
	}
	return name
}
