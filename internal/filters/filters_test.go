package filters

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// describe renders a parsed filter so grammar tests can compare structure:
// selectors as path op "value" (path elements quoted when not plain), "," for
// AND, " | " for OR, "*" for Always.
func describe(f Filter) string {
	switch f := f.(type) {
	case selector:
		var path []string
		for _, e := range f.fieldpath {
			if e == "" || strings.ContainsFunc(e, func(r rune) bool { return !isFieldRune(r) }) {
				e = strconv.Quote(e)
			}
			path = append(path, e)
		}
		s := strings.Join(path, ".")
		switch f.op {
		case opEqual:
			s += "==" + strconv.Quote(f.value)
		case opNotEqual:
			s += "!=" + strconv.Quote(f.value)
		case opMatch:
			s += "~=" + strconv.Quote(f.value)
		}
		return s
	case allOf:
		var parts []string
		for _, g := range f {
			parts = append(parts, describe(g))
		}
		return strings.Join(parts, ",")
	case anyOf:
		var parts []string
		for _, g := range f {
			parts = append(parts, describe(g))
		}
		return strings.Join(parts, " | ")
	}
	if f == Always {
		return "*"
	}
	return "?"
}

func TestParseGrammar(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, `*`},
		// operators and presence
		{`name`, `name`},
		{`name==foo`, `name=="foo"`},
		{`name!=foo`, `name!="foo"`},
		{`name~=foo`, `name~="foo"`},
		{`labels.foo`, `labels.foo`},
		{`labels.foo,name`, `labels.foo,name`},
		{`a,b,c`, `a,b,c`},
		// field paths
		{`labels.a.b==x`, `labels.a.b=="x"`},
		{`labels."a.b"==x`, `labels."a.b"=="x"`},
		{`labels."a.b".c`, `labels."a.b".c`},
		{`"name"==x`, `name=="x"`},
		{`labels."more complex label"`, `labels."more complex label"`},
		{`labels."with \\ and \""==present`, `labels."with \\ and \""=="present"`},
		{`labels.""==x`, `labels.""=="x"`},
		{`event.container_id==abc`, `event.container_id=="abc"`},
		{`labels.io-x_Y9.k8s-app`, `labels.io-x_Y9.k8s-app`},
		{`labels.42`, `labels.42`},
		// unquoted values
		{`labels.foo==omg_asdf.asdf-qwer`, `labels.foo=="omg_asdf.asdf-qwer"`},
		{`image==docker.io/library/busybox:latest`, `image=="docker.io/library/busybox:latest"`},
		{`name==a=b!c~d`, `name=="a=b!c~d"`},
		{`name=='x'`, `name=="'x'"`},
		{`name==a"b"`, `name=="a\"b\""`},
		{`name==a/b|c`, `name=="a/b|c"`},
		{`name==.x`, `name==".x"`},
		{`name==:x`, `name==":x"`},
		{`name==héllo☺`, `name=="héllo☺"`},
		{`name==x` + "\uFFFD", `name=="x` + "\uFFFD" + `"`},
		// quoted values
		{`other=="too complex, yo"`, `other=="too complex, yo"`},
		{`name=="a\tb\n\x41\u00e9\101\\\""`, `name=="a\tb\nAé` + `A\\\""`},
		{`name==""`, `name==""`},
		{`name!=""`, `name!=""`},
		{`topic=="/tasks/exit"`, `topic=="/tasks/exit"`},
		{`name=="a"` + `,b`, `name=="a",b`},
		{`name=="` + "\t" + `"`, `name=="\t"`},
		// alternate quotes for ~=
		{`topic~=/^\/tasks\//`, `topic~="^/tasks/"`},
		{`topic~=|^/tasks/|`, `topic~="^/tasks/"`},
		{`x~=/\d+\.\d+/`, `x~="\\d+\\.\\d+"`},
		{`x~=|a\|b|`, `x~="a|b"`},
		{`x~=|a\/b|`, `x~="a\\/b"`},
		{`x~=/a\\/`, `x~="a\\\\"`},
		{`x~=/a\\\/b/`, `x~="a\\\\/b"`},
		{`x~=/[abc]{0,1}"\//`, `x~="[abc]{0,1}\"/"`},
		{`x~=/a,b/,y`, `x~="a,b",y`},
		{`x~="\\d"`, `x~="\\d"`},
		{`x~=[abc]+`, `x~="[abc]+"`},
		{`x~=^a.*$`, `x~="^a.*$"`},
		{`namespace==moby,topic~=|^/tasks/|`, `namespace=="moby",topic~="^/tasks/"`},
		// whitespace before fields, operators and values
		{` name==a`, `name=="a"`},
		{`name == a`, `name=="a"`},
		{"name\t==\ta", `name=="a"`},
		{`a==b, c==d`, `a=="b",c=="d"`},
		{`labels. foo`, `labels.foo`},
		{`name== "a b"`, `name=="a b"`},
	} {
		f, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := describe(f); got != tc.want {
			t.Errorf("Parse(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`name==a b`, `unexpected input at 7 `},
		{`name==a `, `unexpected input at 7 `},
		{`name `, `expected an operator ("==", "!=" or "~=") at 5 `},
		{`name ,a`, `expected an operator ("==", "!=" or "~=") at 5 `},
		{`labels .foo`, `expected an operator ("==", "!=" or "~=") at 7 `},
		{`name==a ,b`, `unexpected input at 7 `},
		{`name=="a"b`, `unexpected input at 9 `},
		{`name=="a" `, `unexpected input at 9 `},
		{`labels."a"b`, `expected an operator ("==", "!=" or "~=") at 10 `},
		{`name==a` + "\x01", `unexpected input at 7 `},
		{` `, `expected a field, found end of input at 1 `},
		{`,`, `expected a field at 0 `},
		{`name==foo,`, `expected a field, found end of input at 10 `},
		{`a,,b`, `expected a field at 2 `},
		{`,a`, `expected a field at 0 `},
		{`labels.`, `expected a field, found end of input at 7 `},
		{`labels..a`, `expected a field at 7 `},
		{`.a`, `expected a field at 0 `},
		{`labels.?"x"`, `expected a field at 7 `},
		{`labels.|foo|==x`, `invalid quote '|' in a field (only " quotes fields) at 7 `},
		{`/foo/`, `invalid quote '/' in a field (only " quotes fields) at 0 `},
		{`name=a`, `unsupported operator "=" at 4 `},
		{`name!a`, `unsupported operator "!" at 4 `},
		{`name~a`, `unsupported operator "~" at 4 `},
		{`name===a`, `unsupported operator "===" at 4 `},
		{`name==!a`, `unsupported operator "==!" at 4 `},
		{`name>a`, `expected an operator ("==", "!=" or "~=") at 4 `},
		{`name==`, `expected a value, found end of input at 6 `},
		{`name==  `, `expected a value, found end of input at 8 `},
		{`image~=,id?=?fbaq`, `expected a value at 7 `},
		{`name== !a`, `expected a value at 7 `},
		{`name==` + "\x01", `expected a value at 6 `},
		{`name==/x/`, `invalid quote '/' (only ~= accepts /.../ and |...|; use "...") at 6 `},
		{`name!=|x|`, `invalid quote '|' (only ~= accepts /.../ and |...|; use "...") at 6 `},
		{`name=="abc`, `unterminated quoted string at 6 `},
		{`name=="a\"`, `unterminated quoted string at 6 `},
		{"name==\"a\nb\"", `unterminated quoted string at 6 `},
		{"name==\"a\\\nb\"", `unterminated quoted string at 6 `},
		{`x~=/abc`, `unterminated quoted string at 3 `},
		{`x~=|a\|`, `unterminated quoted string at 3 `},
		{`labels."a`, `unterminated quoted string at 7 `},
		{`name=="\d"`, `invalid quoted string "\d" at 6 `},
		{`name=="\'"`, `invalid quoted string "\'" at 6 `},
		{`name=="\x4"`, `invalid quoted string "\x4" at 6 `},
		{`labels."\q"`, `invalid quoted string "\q" at 7 `},
		{`x~=[`, "invalid regular expression: error parsing regexp: missing closing ]: `[` at 3 "},
		{`a==b,x~=/(/`, "invalid regular expression: error parsing regexp: missing closing ): `(` at 8 "},
		{"name==\xff", `invalid UTF-8 at 6 `},
		{"name==\"\x00\"", `NUL character at 7 `},
	} {
		_, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q): no error, want %q", tc.in, tc.want)
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("Parse(%q): error %v is not InvalidArgument", tc.in, err)
		}
		want := "filters: " + tc.want + "in " + strconv.Quote(tc.in) + ": invalid argument"
		if err.Error() != want {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tc.in, err, want)
		}
		if _, err := ParseAll("name", tc.in); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseAll(name, %q): error %v is not InvalidArgument", tc.in, err)
		}
	}
}

// object is a test object with its adaptor.
type object struct {
	name      string // present when not empty
	namespace string
	labels    map[string]string
}

func (o object) Field(fieldpath []string) (string, bool) {
	switch fieldpath[0] {
	case "name":
		return o.name, o.name != ""
	case "namespace":
		return o.namespace, true
	case "labels":
		return LabelField(o.labels, fieldpath[1:])
	}
	// A careless adaptor that answers a value for absent fields, so tests
	// see that absent fields are judged by present, not by value.
	return "junk", false
}

var corpus = map[string]object{
	"foo":      {name: "foo", namespace: "default", labels: map[string]string{"foo": "true"}},
	"bar":      {name: "bar", namespace: "default"},
	"foo2":     {name: "foo", namespace: "moby", labels: map[string]string{"foo": "present", "more complex label": "present"}},
	"bar2":     {name: "bar", namespace: "moby", labels: map[string]string{"bar": "true", "a.b": "dotted", "empty": ""}},
	"noname":   {namespace: "k8s.io", labels: map[string]string{"io.kubernetes.pod": "p1"}},
	"compound": {name: "compound", namespace: "default", labels: map[string]string{"foo": "omg_asdf.asdf-qwer"}},
}

func matching(f Filter) string {
	var got []string
	for k, o := range corpus {
		if f.Match(o) {
			got = append(got, k)
		}
	}
	slices.Sort(got)
	return strings.Join(got, " ")
}

func TestMatch(t *testing.T) {
	const all = "bar bar2 compound foo foo2 noname"
	for _, tc := range []struct {
		in   []string // OR'ed with ParseAll
		want string   // sorted corpus keys
	}{
		{nil, all},
		{[]string{""}, all},
		{[]string{"", "name==nothing"}, all},
		{[]string{"name"}, "bar bar2 compound foo foo2"},
		{[]string{"namespace"}, all},
		{[]string{"nosuchfield"}, ""},
		{[]string{"labels"}, ""},
		{[]string{"labels.foo"}, "compound foo foo2"},
		{[]string{"labels.foo,name"}, "compound foo foo2"},
		{[]string{"labels.foo==true"}, "foo"},
		{[]string{"labels.foo==omg_asdf.asdf-qwer"}, "compound"},
		{[]string{"name==bar"}, "bar bar2"},
		{[]string{"name!=bar"}, "compound foo foo2 noname"},
		{[]string{`name!=""`}, "bar bar2 compound foo foo2 noname"},
		{[]string{`name==""`}, ""},
		{[]string{"nosuchfield==junk"}, ""},
		{[]string{"nosuchfield!=junk"}, all},
		{[]string{"name==bar,labels.bar"}, "bar2"},
		{[]string{"name==bar,labels.bar==true"}, "bar2"},
		{[]string{"name==bar,labels.bar==wrong"}, ""},
		{[]string{"name==bar,namespace==moby,labels.bar==true"}, "bar2"},
		{[]string{`name==foo,labels."more complex label"`}, "foo2"},
		{[]string{`labels."a.b"==dotted`}, "bar2"},
		{[]string{`labels.a.b==dotted`}, "bar2"},
		{[]string{`labels."a".b==dotted`}, "bar2"},
		{[]string{`labels.empty`}, "bar2"},
		{[]string{`labels.empty==""`}, "bar2"},
		{[]string{`labels.empty!=""`}, "bar compound foo foo2 noname"},
		{[]string{`labels.io.kubernetes.pod==p1`}, "noname"},
		{[]string{"name~=^ba"}, "bar bar2"},
		{[]string{"name~=o"}, "compound foo foo2"},
		{[]string{"name~=^$"}, "noname"},
		{[]string{"nosuchfield~=junk"}, ""},
		{[]string{"nosuchfield~=^$"}, all},
		{[]string{"name~=/^(foo|bar)$/,namespace==moby"}, "bar2 foo2"},
		{[]string{`name~=|^f.o$|`}, "foo foo2"},
		{[]string{`labels.foo~=/\.asdf-/`}, "compound"},
		{[]string{`labels.foo~=/^\w+$/`}, "foo foo2"},
		{[]string{"name==foo", "name==bar"}, "bar bar2 foo foo2"},
		{[]string{"name==foo,namespace==moby", "name==bar,namespace==default"}, "bar foo2"},
		{[]string{"labels.bar", "labels.foo", "labels.io.kubernetes.pod"}, "bar2 compound foo foo2 noname"},
		{[]string{"name==nothing", "name==none"}, ""},
	} {
		f, err := ParseAll(tc.in...)
		if err != nil {
			t.Errorf("ParseAll(%q): %v", tc.in, err)
			continue
		}
		if got := matching(f); got != tc.want {
			t.Errorf("ParseAll(%q) matches [%s], want [%s]", tc.in, got, tc.want)
		}
	}
}

func TestParseAll(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, "*"},
		{[]string{""}, "*"},
		{[]string{"", ""}, "*"},
		{[]string{"a", ""}, "*"},
		{[]string{"a"}, "a"},
		{[]string{"a==b,c", "d"}, "a==\"b\",c | d"},
	} {
		f, err := ParseAll(tc.in...)
		if err != nil {
			t.Fatalf("ParseAll(%q): %v", tc.in, err)
		}
		if got := describe(f); got != tc.want {
			t.Errorf("ParseAll(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// An error anywhere fails the whole list, even next to an empty string.
	_, err := ParseAll("", "a==")
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf(`ParseAll("", "a=="): %v, want InvalidArgument`, err)
	}
}

func TestFuncs(t *testing.T) {
	a := AdapterFunc(func(fp []string) (string, bool) { return strings.Join(fp, "/"), true })
	if v, ok := a.Field([]string{"x", "y"}); v != "x/y" || !ok {
		t.Errorf("AdapterFunc.Field = %q, %v", v, ok)
	}
	f := FilterFunc(func(a Adaptor) bool { v, _ := a.Field([]string{"k"}); return v == "k" })
	if !f.Match(a) {
		t.Error("FilterFunc.Match = false")
	}
	if !Always.Match(a) || !Always.Match(AdapterFunc(func([]string) (string, bool) { return "", false })) {
		t.Error("Always.Match = false")
	}
}

func TestLabelField(t *testing.T) {
	labels := map[string]string{"a": "1", "a.b": "2", "": "empty key", "e": ""}
	for _, tc := range []struct {
		rest []string
		v    string
		ok   bool
	}{
		{[]string{"a"}, "1", true},
		{[]string{"a", "b"}, "2", true},
		{[]string{"a.b"}, "2", true},
		{[]string{"e"}, "", true},
		{[]string{"b"}, "", false},
		{nil, "", false},
		{[]string{}, "", false},
	} {
		if v, ok := LabelField(labels, tc.rest); v != tc.v || ok != tc.ok {
			t.Errorf("LabelField(%q) = %q, %v, want %q, %v", tc.rest, v, ok, tc.v, tc.ok)
		}
	}
	if v, ok := LabelField(nil, []string{"a"}); v != "" || ok {
		t.Errorf("LabelField(nil) = %q, %v", v, ok)
	}
}
