// Package filters implements containerd's filter language, the small
// selector syntax that containerd clients send in List and Subscribe
// requests ("name==foo,labels.bar", "topic~=|^/tasks/|").
//
// # Grammar
//
//	filters   := filter*                    (ParseAll: the filters are OR'ed)
//	filter    := "" | selector ("," selector)*   (the selectors are AND'ed)
//	selector  := fieldpath [operator value] (without operator: field is present)
//	fieldpath := field ("." field)*
//	field     := "..." | [A-Za-z0-9_-]+
//	operator  := "==" | "!=" | "~="
//	value     := "..." | /.../ | |...| | unquoted
//	unquoted  := a run of printable, non-space runes other than ",", whose
//	             first rune is none of " / | = ! ~
//
// A "..." string follows Go's string literal syntax and escapes (as
// strconv.Unquote). The alternate quotes /.../ and |...| are accepted only as
// the value of "~="; inside them a backslash before the delimiter stands for
// the delimiter, and every other backslash sequence is kept as written, so
// that regular expressions such as /\d+\.\d+/ need no double escaping.
// Because "/" and "|" are quote runes, "name==/x/" is an error; write
// name=="/x/" instead. Single quotes are not quotes: 'x' is a literal value.
// Inside an unquoted value ".", "/", ":", "=" and quote runes are ordinary.
//
// Whitespace (unicode.IsSpace) may precede a field, an operator or a value.
// Anywhere else (after a value or a field path, that is before ",", "." or
// the end of the input) it is unexpected input, as in containerd:
// "name==a b" and "name==a " are errors, "name == a, labels.b" is not.
// The input must be valid UTF-8 without NUL bytes.
//
// # Semantics
//
// For a selector with field path p, the Adaptor is asked for p once:
//
//	p          matches when p is present
//	p==v       matches when p is present and its value equals v
//	p!=v       matches when p is absent or its value differs from v
//	p~=re      matches when the Go regular expression re (unanchored) matches
//	           the value of p; an absent field is matched as ""
//
// The empty string matches everything, as does ParseAll with no strings.
// A trailing or doubled comma, a missing value, an unknown operator, a bad
// quoted string and a regular expression that does not compile are errors.
//
// # Invariants
//
// Every error returned by Parse and ParseAll wraps errdefs.ErrInvalidArgument
// and names the problem, the byte offset where it was found and the input.
// A Filter returned without error never panics in Match, whatever the
// Adaptor answers. The field path it passes to Field is never empty and
// never modified by the filter; adaptors must not modify it either.
package filters

import (
	"regexp"
	"strings"
)

// Adaptor maps a field path, such as ["labels", "foo"] for "labels.foo", to
// the value of that field in one object and whether the field is present.
// How a field path maps to an object's fields is up to the adaptor.
type Adaptor interface {
	Field(fieldpath []string) (value string, present bool)
}

// AdapterFunc is a function used as an Adaptor.
type AdapterFunc func(fieldpath []string) (string, bool)

// Field calls fn(fieldpath).
func (fn AdapterFunc) Field(fieldpath []string) (string, bool) {
	return fn(fieldpath)
}

// Filter reports whether an object, seen through an Adaptor, matches.
type Filter interface {
	Match(Adaptor) bool
}

// FilterFunc is a function used as a Filter.
type FilterFunc func(Adaptor) bool

// Match calls fn(a).
func (fn FilterFunc) Match(a Adaptor) bool {
	return fn(a)
}

// Always is the Filter that matches every object. Parse and ParseAll return
// exactly Always for filters that match everything, and Always is
// comparable, so callers may test f == Always to skip filtering.
var Always Filter = always{}

type always struct{}

func (always) Match(Adaptor) bool { return true }

// LabelField helps object adaptors resolve a "labels" field path. Given the
// field path after "labels", it joins the rest with "." into a label key, so
// that labels.a.b and labels."a.b" both name the key "a.b", and looks it up.
// An empty rest (the bare path "labels") names no label and is absent.
func LabelField(labels map[string]string, rest []string) (string, bool) {
	if len(rest) == 0 {
		return "", false
	}
	v, ok := labels[strings.Join(rest, ".")]
	return v, ok
}

// anyOf matches when one of its filters matches.
type anyOf []Filter

func (fs anyOf) Match(a Adaptor) bool {
	for _, f := range fs {
		if f.Match(a) {
			return true
		}
	}
	return false
}

// allOf matches when all of its filters match.
type allOf []Filter

func (fs allOf) Match(a Adaptor) bool {
	for _, f := range fs {
		if !f.Match(a) {
			return false
		}
	}
	return true
}

type operator int

const (
	opPresent  operator = iota // fieldpath alone
	opEqual                    // ==
	opNotEqual                 // !=
	opMatch                    // ~=
)

// selector is one fieldpath [operator value] term of a filter.
type selector struct {
	fieldpath []string
	op        operator
	value     string
	re        *regexp.Regexp // compiled value, for opMatch
}

func (s selector) Match(a Adaptor) bool {
	v, present := a.Field(s.fieldpath)
	switch s.op {
	case opPresent:
		return present
	case opEqual:
		return present && v == s.value
	case opNotEqual:
		return !present || v != s.value
	case opMatch:
		if !present {
			v = ""
		}
		return s.re.MatchString(v)
	}
	return false
}
