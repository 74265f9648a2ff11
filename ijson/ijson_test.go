package ijson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batpak-go/batpak/ijson"
)

// reference answers what Validate must, from encoding/json: whether doc
// is one JSON value in valid UTF-8 (json.Valid does not check UTF-8), its
// depth, and the first repeated member name in document order, names
// decoded by encoding/json's own decoder.
type reference struct {
	valid  bool
	depth  int
	dup    bool
	dupKey string
}

func referenceOf(doc []byte) reference {
	r := reference{valid: json.Valid(doc) && utf8.Valid(doc)}
	if !r.valid {
		return r
	}
	type frame struct {
		obj     bool
		wantKey bool
		names   map[string]bool
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return r
		}
		if err != nil {
			panic(fmt.Sprintf("json.Valid accepted %q but Token failed: %v", doc, err))
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].wantKey = true
			}
			continue
		}
		if top != nil && top.obj && top.wantKey {
			k := tok.(string)
			if top.names[k] && !r.dup {
				r.dup, r.dupKey = true, k
			}
			top.names[k] = true
			top.wantKey = false
			continue
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, frame{obj: d == '{', wantKey: d == '{', names: map[string]bool{}})
			r.depth = max(r.depth, len(stack))
			continue
		}
		if top != nil && top.obj {
			top.wantKey = true
		}
	}
}

// check compares Validate at the limit with the reference.
func check(t *testing.T, doc []byte, limit int) {
	t.Helper()
	ref := referenceOf(doc)
	if got, want := ijson.ValidSyntax(doc), json.Valid(doc); got != want {
		t.Fatalf("ValidSyntax(%q) = %v, json.Valid %v", doc, got, want)
	}
	err := ijson.Validate(doc, limit)
	var e *ijson.Error
	if err != nil && !errors.As(err, &e) {
		t.Fatalf("Validate(%q): %T %v, want *ijson.Error", doc, err, err)
	}
	switch {
	case !ref.valid:
		// Any rule may come first (a repeated name before a syntax error).
		if err == nil {
			t.Fatalf("Validate(%q) accepted what encoding/json refuses", doc)
		}
	case ref.depth > limit:
		if err == nil || !(e.Rule == ijson.RuleDepth && e.Limit == limit || ref.dup && e.Rule == ijson.RuleDuplicateKey && e.Key == ref.dupKey) {
			t.Fatalf("Validate(%q, %d), depth %d: got %v, want a depth error", doc, limit, ref.depth, err)
		}
	case ref.dup:
		if err == nil || e.Rule != ijson.RuleDuplicateKey || e.Key != ref.dupKey {
			t.Fatalf("Validate(%q): got %v, want the repeated name %q", doc, err, ref.dupKey)
		}
	default:
		if err != nil {
			t.Fatalf("Validate(%q, %d): %v, but encoding/json accepts it (depth %d)", doc, limit, err, ref.depth)
		}
	}
}

var tricky = []string{
	``, ` `, `{`, `}`, `[`, `]`, `{"a":}`, `{"a" 1}`, `[1,2`, `abc`, `nul`, `tru`, `fals`, `'x'`,
	`{} {}`, `1 2`, `{"a":1},`, `01`, `-01`, `1.`, `.5`, `+1`, `-`, `- 1`, `1e`, `1e+`, `1E-7`, `-0.0e00`,
	`NaN`, `Infinity`, `"unterminated`, `{a:1}`, "\"ctl\x01\"", "\"tab\t\"", `[1,]`, `{"a":1,}`, "\xff",
	`"\x"`, `"\u12"`, `"\u12G4"`, `"\uD800"`, `"\ud83d\ude00"`, `"\/"`, `"\'"`, "\"\x7f\"", "\"\xed\xa0\x80\"",
	"\"\xef\xbf\xbd\"", "\"\xc3\"", "\"\xc3\xa9\"", "\"\xf4\x90\x80\x80\"", " \t\r\n{ \"a\" : [ 1 , 2 ] } \n",
	`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"a":1}}`, `[{"a":1},{"a":2}]`, `{"\ud800":1,"\udc00":2}`,
	`{"\ud800\udc00":1,"𐀀":2}`, `{"\ud800":1,"\ufffd":2}`, `{"":1,"":2}`, `{"x":[{"k":1,"k":2}]}`,
	`true`, `false`, `null`, `0`, `-0`, `"x"`, `[]`, `{}`, `[[[]]]`, `[{"a":[{"b":{}}]}]`, "[1]\x00",
	`{"a":1 "b":2}`, `{"a":1,,"b":2}`, `[1 2]`, `{"a"}`, `{"a":1]`, `[1}`, `{,}`, `[,]`, `{"a":1}}`, `[]]`,
}

func TestValidateAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range tricky {
		for _, limit := range []int{1, 2, 3, ijson.MaxDepth} {
			check(t, []byte(s), limit)
		}
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		doc := randomDoc(r, 6)
		check(t, doc, 1+r.Intn(6))
		if len(doc) > 0 { // and damaged
			d := append([]byte(nil), doc...)
			d[r.Intn(len(d))] = "{}[]\",:\\ 0a-.eu\x00\xc3"[r.Intn(17)]
			check(t, d, ijson.MaxDepth)
		}
	}
}

// randomDoc builds JSON-ish text rich in what the rules are about:
// repeated and escaped names, surrogates, exponents, nesting.
func randomDoc(r *rand.Rand, depth int) []byte {
	var b bytes.Buffer
	var value func(d int)
	names := []string{`"a"`, `"\u0061"`, `"b"`, `"total_cents"`, `"total\u005fcents"`, `"\ud800"`, `"\ufffd"`,
		`"\ud83d\ude00"`, `"😀"`, `"\/"`, `"/"`, `""`, `"\n"`, "\"\u00e9\"", `"e\u0301"`}
	value = func(d int) {
		switch k := r.Intn(10); {
		case k < 2 && d > 0:
			b.WriteByte('{')
			for n, i := r.Intn(4), 0; i < n; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(names[r.Intn(len(names))])
				b.WriteString([]string{":", " : ", "\n:\t"}[r.Intn(3)])
				value(d - 1)
			}
			b.WriteByte('}')
		case k < 4 && d > 0:
			b.WriteByte('[')
			for n, i := r.Intn(4), 0; i < n; i++ {
				if i > 0 {
					b.WriteString([]string{",", " , "}[r.Intn(2)])
				}
				value(d - 1)
			}
			b.WriteByte(']')
		case k < 6:
			b.WriteString([]string{`0`, `-1`, `1e9`, `2.5E-3`, `998`, `-0.0`, `1E+2`, `123456789012345678901234567890`}[r.Intn(8)])
		case k < 8:
			b.WriteString(names[r.Intn(len(names))])
		default:
			b.WriteString([]string{`true`, `false`, `null`}[r.Intn(3)])
		}
	}
	value(depth)
	return b.Bytes()
}

func FuzzValidateJSON(f *testing.F) {
	for _, s := range tricky {
		f.Add([]byte(s), uint16(ijson.MaxDepth))
	}
	f.Add([]byte(`[[[[1]]]]`), uint16(3))
	f.Fuzz(func(t *testing.T, doc []byte, limit uint16) {
		l := int(limit)
		if l < 1 || l > ijson.MaxDepth {
			l = ijson.MaxDepth
		}
		check(t, doc, l)
	})
}

func TestDepthBoundary(t *testing.T) {
	for _, limit := range []int{1, 2, 512, ijson.MaxDepth} {
		for _, open := range []string{"[", `{"a":`, `[{"":`} {
			for _, depth := range []int{limit, limit + 1} {
				var doc string
				switch open {
				case "[":
					doc = strings.Repeat("[", depth) + strings.Repeat("]", depth)
				case `{"a":`:
					doc = strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
				default: // alternating arrays and objects
					var b strings.Builder
					for i := 0; i < depth; i++ {
						b.WriteString(map[bool]string{true: "[", false: `{"":`}[i%2 == 0])
					}
					b.WriteString("0")
					for i := depth - 1; i >= 0; i-- {
						b.WriteString(map[bool]string{true: "]", false: "}"}[i%2 == 0])
					}
					doc = b.String()
				}
				err := ijson.Validate([]byte(doc), limit)
				if depth == limit && err != nil {
					t.Errorf("%s… at depth %d (the limit): %v", open, depth, err)
				}
				var e *ijson.Error
				if depth > limit && (!errors.As(err, &e) || e.Rule != ijson.RuleDepth || e.Limit != limit) {
					t.Errorf("%s… at depth %d (limit %d): %v, want a depth error", open, depth, limit, err)
				}
			}
		}
	}
}

func TestUnquoteAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range []string{`""`, `"a"`, `"\u0061"`, `"\ud800"`, `"\ud800\udc00"`, `"\udc00\ud800"`,
		`"\ud800\u0061"`, `"\ud800x"`, `"\ud83d\ude00"`, `"\\\"\/\b\f\n\r\t"`, "\"\xff\"", "\"a\xc3b\"",
		`"\uFFFD"`, `"\u00e9"`, `"\ud800\ud800\udc00"`} {
		var want string
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("encoding/json refuses %s: %v", s, err)
		}
		got, ok := ijson.Unquote([]byte(s))
		if !ok || got != want {
			t.Errorf("Unquote(%s) = %q, %v; encoding/json reads %q", s, got, ok, want)
		}
	}
}

// TestLookupAgreesWithEncodingJSON: for every top-level name of random
// adversarial objects, Lookup finds what encoding/json (the policy's
// decoder) reads, and finds nothing where it finds nothing.
func TestLookupAgreesWithEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	keys := []string{"a", "b", "total_cents", "\xff", "\ufffd", "😀", "/", "", "\n", "é", "e\u0301", "missing"}
	for i := 0; i < 20000; i++ {
		doc := randomDoc(r, 4)
		var m map[string]json.RawMessage
		if json.Unmarshal(doc, &m) != nil || !utf8.Valid(doc) {
			continue
		}
		for _, k := range keys {
			want, wok := m[k]
			got, ok := ijson.Lookup(doc, k)
			if ok != wok || (ok && !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want))) {
				t.Fatalf("Lookup(%s, %q) = %s, %v; encoding/json reads %s, %v", doc, k, got, ok, want, wok)
			}
		}
	}
}

// ValidatePrefix finds the end of the value a document starts with and
// answers for that value as Validate does, whatever follows it.
func TestValidatePrefixAgreesWithValidate(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	docs := append([]string(nil), tricky...)
	for i := 0; i < 5000; i++ {
		doc := randomDoc(r, 5)
		if len(doc) > 0 && r.Intn(2) == 0 {
			doc[r.Intn(len(doc))] = "{}[]\",:\\ 0a-.eu\x00\xc3"[r.Intn(17)]
		}
		docs = append(docs, string(doc))
	}
	for _, doc := range docs {
		for _, limit := range []int{1, 3, ijson.MaxDepth} {
			whole := ijson.Validate([]byte(doc), limit)
			for _, rest := range []string{"", ",1]", "}", " x", `,"a":{"b":[1,2]}}`} {
				in := doc + rest
				end, err := ijson.ValidatePrefix([]byte(in), limit)
				if err != nil {
					if whole == nil {
						t.Fatalf("ValidatePrefix(%q, %d): %v, but Validate(%q) accepts it", in, limit, err, doc)
					}
					continue
				}
				trimmed := strings.TrimRight(doc, " \t\r\n")
				if whole == nil && end != len(trimmed) {
					t.Fatalf("ValidatePrefix(%q, %d) ends at %d, want %d", in, limit, end, len(trimmed))
				}
				if err := ijson.Validate([]byte(in[:end]), limit); err != nil {
					t.Fatalf("ValidatePrefix(%q, %d) took %q, which Validate refuses: %v", in, limit, in[:end], err)
				}
			}
		}
	}
}

// TestMembersAgreesWithEncodingJSON: the members Members reports of random
// adversarial objects, the last of repeated names kept, are the members
// encoding/json reads; it stops when asked to; it refuses what is not an
// object.
func TestMembersAgreesWithEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	objects := 0
	for i := 0; i < 20000; i++ {
		doc := randomDoc(r, 4)
		var want map[string]json.RawMessage
		if json.Unmarshal(doc, &want) != nil || want == nil || !utf8.Valid(doc) {
			continue
		}
		objects++
		got := map[string][]byte{}
		if !ijson.Members(doc, func(name, raw []byte) bool { got[string(name)] = raw; return true }) {
			t.Fatalf("Members(%s) refused an object", doc)
		}
		if len(got) != len(want) {
			t.Fatalf("Members(%s) = %d names; encoding/json reads %d", doc, len(got), len(want))
		}
		for k, w := range want {
			if g, ok := got[k]; !ok || !bytes.Equal(bytes.TrimSpace(g), bytes.TrimSpace(w)) {
				t.Fatalf("Members(%s)[%q] = %s, %v; encoding/json reads %s", doc, k, g, ok, w)
			}
		}
	}
	if objects < 1000 {
		t.Fatalf("only %d random objects", objects)
	}
	n := 0
	if !ijson.Members([]byte(`{"a":1,"b":[2],"c":{}}`), func(name, raw []byte) bool { n++; return string(name) != "b" }) || n != 2 {
		t.Fatalf("Members did not stop after b: %d calls", n)
	}
	for _, doc := range []string{`[1]`, `"x"`, `12`, ``, `{"a" 1}`, `{"a":1`} {
		if ijson.Members([]byte(doc), func(name, raw []byte) bool { return true }) {
			t.Errorf("Members(%s) = true, want false", doc)
		}
	}
}

// A Checked record covers exactly the bytes it checked, at its depth or a
// laxer one: never a copy, a part, a stricter limit, or anything when it
// is the zero record.
func TestCheckedCoversOnlyItsBytes(t *testing.T) {
	doc := []byte(`  {"a":[1,2,{"b":null}]} , "rest"`)
	c, end, err := ijson.CheckPrefix(doc, 5)
	if err != nil {
		t.Fatal(err)
	}
	v := c.Bytes()
	if string(v) != `{"a":[1,2,{"b":null}]}` || end != 24 {
		t.Fatalf("value %q end %d", v, end)
	}
	if !c.Covers(v, 5) || !c.Covers(v, 64) || !c.Covers(v, 3) {
		t.Fatal("the record does not cover its own bytes within its depth, 3")
	}
	if c.Covers(v, 2) {
		t.Fatal("a value 3 deep is covered at a limit of 2")
	}
	if c.Covers(bytes.Clone(v), 5) {
		t.Fatal("the record covers an equal copy")
	}
	if c.Covers(v[:len(v)-1], 5) || c.Covers(doc[2:30], 5) {
		t.Fatal("the record covers other extents of the same memory")
	}
	var zero ijson.Checked
	if zero.Covers(v, 64) || zero.Covers(nil, 64) || zero.Bytes() != nil {
		t.Fatal("the zero record covers something")
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `[1,]`, "\"\xff\"", `[[[[[[1]]]]]]`} {
		if c, _, err := ijson.CheckPrefix([]byte(bad), 5); err == nil || c.Bytes() != nil {
			t.Fatalf("%q: refused %v, record %q", bad, err, c.Bytes())
		}
	}
}

// TestStringsReadEightAtATime: a string is scanned eight bytes at a time
// while they are plain; a byte that needs a look (the quote, a backslash,
// a control byte, UTF-8 good or bad) at every position of a long string,
// and bytes next to the boundaries of those classes, must be judged as
// encoding/json judges them.
func TestStringsReadEightAtATime(t *testing.T) {
	specials := []string{`"`, `\"`, `\\`, `\n`, `\u00e9`, `\x`, "\x00", "\x01", "\x1f", " ", "!", "#", "[", "]", "~", "\x7f",
		"é", "😀", "\xc3", "\xff", "\xed\xa0\x80", "\x80"}
	for _, sp := range specials {
		for pos := 0; pos <= 20; pos++ {
			s := strings.Repeat("a", pos) + sp + strings.Repeat("b", 24-pos)
			check(t, []byte(`"`+s+`"`), ijson.MaxDepth)
			check(t, []byte(`{"`+s+`":1,"k":"`+s+`"}`), ijson.MaxDepth)
			check(t, []byte(`"`+s), ijson.MaxDepth) // unterminated
		}
	}
}

// Objects of many names (past the pairwise comparison, into a hash set),
// nested inside each other in both orders — an inner object hashed while
// the outer one compares pairwise and the other way round — with names
// written with and without escapes: repeated names are found as
// encoding/json reads them, and a validator reused from the pool after
// any of them judges the next document alike.
func TestManyNamesNested(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	nameOf := func(i int) string {
		if r.Intn(3) == 0 {
			return fmt.Sprintf(`"k\u00%x%d"`, 0x30+i%10, i/10) // k<digit><n>, escaped
		}
		return fmt.Sprintf(`"k%d%d"`, i%10, i/10)
	}
	var obj func(depth int) string
	obj = func(depth int) string {
		n := 1 + r.Intn(40)
		var b strings.Builder
		b.WriteByte('{')
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			k := i
			if r.Intn(60) == 0 {
				k = r.Intn(n) // now and then a repeat
			}
			b.WriteString(nameOf(k) + ":")
			if depth > 0 && r.Intn(8) == 0 {
				b.WriteString(obj(depth - 1))
			} else {
				b.WriteString("1")
			}
		}
		b.WriteByte('}')
		return b.String()
	}
	for i := 0; i < 1500; i++ {
		check(t, []byte(obj(3)), ijson.MaxDepth)
	}
}
