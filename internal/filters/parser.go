package filters

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// Parse parses one filter: selectors separated by commas, all of which must
// match. The empty string gives Always. See the package documentation for
// the grammar. Errors wrap errdefs.ErrInvalidArgument.
func Parse(s string) (Filter, error) {
	if s == "" {
		return Always, nil
	}
	p := parser{input: s}
	return p.parse()
}

// ParseAll parses each string with Parse and returns a filter that matches
// when any of them matches. With no strings, or if any string is empty, the
// result is Always. The first error is returned, wrapping
// errdefs.ErrInvalidArgument.
func ParseAll(ss ...string) (Filter, error) {
	var fs anyOf
	always := len(ss) == 0
	for _, s := range ss {
		f, err := Parse(s)
		if err != nil {
			return nil, err
		}
		if s == "" {
			always = true
		}
		fs = append(fs, f)
	}
	if always {
		return Always, nil
	}
	if len(fs) == 1 {
		return fs[0], nil
	}
	return fs, nil
}

const eof = -1

// parser is a recursive-descent parser working directly on the input; the
// lexical rules (fields, operators, values, quoted strings) live here too.
type parser struct {
	input string
	pos   int // byte offset of the next unread rune
}

// errorf returns an error naming what is wrong at byte offset pos.
func (p *parser) errorf(pos int, format string, args ...any) error {
	return fmt.Errorf("filters: %s at %d in %q: %w",
		fmt.Sprintf(format, args...), pos, p.input, errdefs.ErrInvalidArgument)
}

// peek returns the next rune without consuming it, or eof.
func (p *parser) peek() rune {
	if p.pos >= len(p.input) {
		return eof
	}
	r, _ := utf8.DecodeRuneInString(p.input[p.pos:])
	return r
}

// skipSpace consumes whitespace.
func (p *parser) skipSpace() {
	p.pos += len(p.input[p.pos:]) - len(strings.TrimLeftFunc(p.input[p.pos:], unicode.IsSpace))
}

// takeWhile consumes and returns the longest run of runes satisfying ok.
func (p *parser) takeWhile(ok func(rune) bool) string {
	start := p.pos
	for r := p.peek(); r != eof && ok(r); r = p.peek() {
		p.pos += utf8.RuneLen(r)
	}
	return p.input[start:p.pos]
}

func (p *parser) parse() (Filter, error) {
	for i, r := range p.input {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(p.input[i:], string(utf8.RuneError)):
			return nil, p.errorf(i, "invalid UTF-8")
		case r == 0:
			return nil, p.errorf(i, "NUL character")
		}
	}
	var sels allOf
	for {
		sel, err := p.selector()
		if err != nil {
			return nil, err
		}
		sels = append(sels, sel)
		switch p.peek() {
		case eof:
			if len(sels) == 1 {
				return sels[0], nil
			}
			return sels, nil
		case ',':
			p.pos++
		default:
			return nil, p.errorf(p.pos, "unexpected input")
		}
	}
}

func (p *parser) selector() (selector, error) {
	var sel selector
	for {
		f, err := p.field()
		if err != nil {
			return sel, err
		}
		sel.fieldpath = append(sel.fieldpath, f)
		if p.peek() != '.' {
			break
		}
		p.pos++
	}
	if r := p.peek(); r == eof || r == ',' {
		sel.op = opPresent
		return sel, nil
	}

	p.skipSpace()
	start := p.pos
	switch op := p.takeWhile(isOperatorRune); op {
	case "==":
		sel.op = opEqual
	case "!=":
		sel.op = opNotEqual
	case "~=":
		sel.op = opMatch
	case "":
		return sel, p.errorf(start, `expected an operator ("==", "!=" or "~=")`)
	default:
		return sel, p.errorf(start, "unsupported operator %q", op)
	}

	p.skipSpace()
	start = p.pos
	v, err := p.value(sel.op == opMatch)
	if err != nil {
		return sel, err
	}
	sel.value = v
	if sel.op == opMatch {
		if sel.re, err = regexp.Compile(v); err != nil {
			return sel, p.errorf(start, "invalid regular expression: %v", err)
		}
	}
	return sel, nil
}

// field parses one element of a field path.
func (p *parser) field() (string, error) {
	p.skipSpace()
	switch r := p.peek(); {
	case r == '"':
		return p.quoted()
	case isQuoteRune(r):
		return "", p.errorf(p.pos, "invalid quote %q in a field (only \" quotes fields)", r)
	case isFieldRune(r):
		return p.takeWhile(isFieldRune), nil
	case r == eof:
		return "", p.errorf(p.pos, "expected a field, found end of input")
	default:
		return "", p.errorf(p.pos, "expected a field")
	}
}

// value parses the value after an operator; alt allows /.../ and |...|.
func (p *parser) value(alt bool) (string, error) {
	switch r := p.peek(); {
	case r == '"' || alt && isQuoteRune(r):
		return p.quoted()
	case isQuoteRune(r):
		return "", p.errorf(p.pos, "invalid quote %q (only ~= accepts /.../ and |...|; use \"...\")", r)
	case r == eof:
		return "", p.errorf(p.pos, "expected a value, found end of input")
	case isOperatorRune(r) || !isValueRune(r):
		return "", p.errorf(p.pos, "expected a value")
	}
	return p.takeWhile(isValueRune), nil
}

// quoted parses a quoted string starting at the current position and returns
// its contents: Go escapes for "...", only the escaped delimiter for /.../
// and |...|.
func (p *parser) quoted() (string, error) {
	start := p.pos
	q := p.input[start]
	end := -1
	for i := start + 1; i < len(p.input) && end < 0; i++ {
		switch p.input[i] {
		case q:
			end = i + 1
		case '\n':
			i = len(p.input)
		case '\\':
			if i+1 < len(p.input) && p.input[i+1] == '\n' {
				i = len(p.input)
			}
			i++ // the escaped byte cannot end the string
		}
	}
	if end < 0 {
		return "", p.errorf(start, "unterminated quoted string")
	}
	raw := p.input[start:end]
	p.pos = end
	if q == '"' {
		s, err := strconv.Unquote(raw)
		if err != nil {
			return "", p.errorf(start, "invalid quoted string %s", raw)
		}
		return s, nil
	}
	// A backslash before the delimiter is the only escape. Replacing every
	// `\q` is exact: an escaped backslash directly before q would have ended
	// the string, so no `\q` in the contents belongs to a `\\` pair.
	return strings.ReplaceAll(raw[1:len(raw)-1], `\`+string(q), string(q)), nil
}

func isQuoteRune(r rune) bool { return r == '"' || r == '/' || r == '|' }

func isOperatorRune(r rune) bool { return r == '=' || r == '!' || r == '~' }

func isFieldRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

func isValueRune(r rune) bool {
	return r != ',' && unicode.IsGraphic(r) && !unicode.IsSpace(r)
}
