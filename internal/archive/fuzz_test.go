//go:build linux

package archive

import (
	"archive/tar"
	"bytes"
	"os"
	"strings"
	"testing"
)

// Fuzz input format: byte 0 holds flags (bit 0 overlay mode, bit 1 the
// component walk instead of openat2, bit 2 "the rest is a raw stream"),
// then 6-byte records: type, two bytes choosing the name, two choosing the
// link name, and one of extras (absolute name, mode bits, xattrs, content).

var fuzzTypes = []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeFifo, tar.TypeBlock}

// fuzzComponents are the name components; "@" stands for the sentinel's
// absolute path.
var fuzzComponents = []string{"a", "b", "..", ".", "", "outside", "secret", ".wh.a", ".wh..wh..opq", ".wh.secret", ".wh..", "dir", "inner", "link", "@", "etc"}

var fuzzLinks = []string{"a", "b", "..", ".", "/", "outside", "secret", "@", "@/secret", "../../../../outside", "../outside/secret", "a/..", "dir", ".wh.a", "etc/unbroken", "link"}

func pick(v int, from []string, s *sandbox) []string {
	n := 1 + v%3
	v /= 3
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		c := from[v%len(from)]
		v /= len(from)
		out = append(out, strings.ReplaceAll(c, "@", s.outside))
	}
	return out
}

// fuzzLayer turns fuzz bytes into a tar and apply options.
func fuzzLayer(s *sandbox, data []byte) ([]byte, []ApplyOpt) {
	if len(data) == 0 {
		return nil, nil
	}
	flags := data[0]
	data = data[1:]
	var opts []ApplyOpt
	if flags&1 != 0 {
		opts = append(opts, WithOverlayWhiteouts())
	}
	if flags&2 != 0 {
		opts = append(opts, func(o *applyOptions) { o.manual = true })
	}
	if flags&4 != 0 {
		return data, opts
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n := 0; len(data) >= 6 && n < 48; n++ {
		r := data[:6]
		data = data[6:]
		extra := r[5]
		name := strings.Join(pick(int(r[1])<<8|int(r[2]), fuzzComponents, s), "/")
		if extra&1 != 0 {
			name = "/" + name
		}
		hdr := &tar.Header{
			Typeflag: fuzzTypes[int(r[0])%len(fuzzTypes)],
			Name:     name,
			Linkname: strings.Join(pick(int(r[3])<<8|int(r[4]), fuzzLinks, s), "/"),
			Mode:     int64(0o644 | int(extra>>1&7)<<9 | int(r[0]>>3&7)),
			Uid:      int(r[0] >> 6),
			Gid:      int(r[0] >> 6),
			ModTime:  testTime,
			Format:   tar.FormatPAX,
		}
		if extra&0x10 != 0 {
			hdr.PAXRecords = map[string]string{
				paxSchilyXattr + "user.fuzz":              "1",
				paxSchilyXattr + "trusted.overlay.opaque": "y",
			}
		}
		var body []byte
		if hdr.Typeflag == tar.TypeReg {
			body = []byte(strings.Repeat("pwn", int(extra>>5)))
			hdr.Size = int64(len(body))
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			hdr.Devmajor, hdr.Devminor = 1, int64(r[4]%8)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			continue
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes(), opts
}

// fuzzSeeds encode the hostile patterns of TestBreakouts in the format.
func fuzzSeeds() [][]byte {
	rec := func(typ int, name, link int, extra byte) []byte {
		return []byte{byte(typ), byte(name >> 8), byte(name), byte(link >> 8), byte(link), extra}
	}
	// Names: 1 + v%3 components, then digits base 16.
	one := func(c int) int { return 3 * c }                 // one component
	two := func(c1, c2 int) int { return 1 + 3*(c1+16*c2) } // two components
	three := func(c1, c2, c3 int) int { return 2 + 3*(c1+16*(c2+16*c3)) }
	seq := func(flags byte, recs ...[]byte) []byte {
		out := []byte{flags}
		for _, r := range recs {
			out = append(out, r...)
		}
		return out
	}
	const (
		reg, dir, sym, hard, chr, fifo                    = 0, 1, 2, 3, 4, 5
		a, b, dotdot, out, secret, whA, opq, whSecret, at = 0, 1, 2, 5, 6, 7, 8, 9, 14
		lA, lSlash, lAt, lAtSecret, lUp, lUpSecret, lLink = 0, 4, 7, 8, 9, 10, 15
	)
	var seeds [][]byte
	for flags := byte(0); flags < 4; flags++ {
		seeds = append(seeds,
			seq(flags, rec(sym, one(a), one(lAt), 0), rec(reg, two(a, secret), 0, 0x20)),
			seq(flags, rec(sym, one(a), one(lUp), 0), rec(reg, two(a, secret), 0, 0x20)),
			seq(flags, rec(reg, three(dotdot, dotdot, secret), 0, 0x20)),
			seq(flags, rec(hard, one(b), one(lUpSecret), 0)),
			seq(flags, rec(sym, one(a), one(lAtSecret), 0), rec(hard, one(b), one(lA), 0x0e)),
			seq(flags, rec(dir, one(a), 0, 0), rec(sym, one(a), one(lSlash), 0), rec(reg, two(a, secret), 0, 0x20)),
			seq(flags, rec(sym, one(a), one(lAt), 0), rec(reg, two(a, whSecret), 0, 0), rec(reg, two(a, opq), 0, 0)),
			seq(flags, rec(reg, two(dotdot, whSecret), 0, 0), rec(reg, one(whA), 0, 0)),
			seq(flags, rec(sym, one(a), one(lAt), 0), rec(chr, two(a, secret), 0, 0), rec(fifo, one(a), 0, 0)),
			seq(flags, rec(reg, one(at), 0, 1), rec(sym, one(b), one(lLink), 0x10), rec(hard, one(out), one(lAtSecret), 0)),
		)
	}
	seeds = append(seeds, []byte{4, 0x1f, 0x8b, 8, 0}, []byte{4})
	return seeds
}

// fuzzDir is a fresh directory on tmpfs when there is one: many times
// faster to create and remove than on a busy disk, so more inputs per
// second; the property checked does not depend on the filesystem.
func fuzzDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "berth-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FuzzApply applies layers built from fuzz bytes onto a root beside a
// sentinel tree and fails if anything outside root changed. Errors are
// fine; escapes and panics are not.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		s := newSandboxIn(t, fuzzDir(t))
		before := s.snapshot(t)
		tarball, opts := fuzzLayer(s, data)
		_ = applyBytes(t, s.root, tarball, opts...)
		s.checkUntouched(t, before)
		if exists("/etc/secret") || exists("/etc/.wh.a") {
			t.Fatal("wrote into the host's /etc")
		}
	})
}
