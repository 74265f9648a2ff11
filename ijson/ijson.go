package ijson

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is the deepest nesting Validate can be asked to allow:
// encoding/json's own limit, so whatever Validate accepts the policy's
// decoder can read.
const MaxDepth = 10000

// The rules an Error names.
const (
	RuleSyntax       = "syntax"        // not one RFC 8259 JSON value
	RuleUTF8         = "utf8"          // a string holds bytes that are not UTF-8
	RuleDepth        = "depth"         // nested deeper than the limit
	RuleDuplicateKey = "duplicate-key" // an object repeats a member name
)

// Error says why Validate refused its input.
type Error struct {
	Offset int    // byte offset where the input was refused
	Rule   string // RuleSyntax, RuleUTF8, RuleDepth or RuleDuplicateKey
	Limit  int    // the depth limit (RuleDepth)
	Key    string // the repeated member name, escapes decoded (RuleDuplicateKey)
	Msg    string // what was wrong, in words
}

func (e *Error) Error() string { return fmt.Sprintf("at byte %d: %s", e.Offset, e.Msg) }

// linearNames is how many member names of one object are compared one by
// one; an object with more switches to a hash set.
const linearNames = 16

// name is a member name of an open object: its decoded bytes (a slice of
// the input when it has no escapes) and the offset of its opening quote.
type name struct {
	s   []byte
	off int
}

// object is an open object's record of its member names.
type object struct {
	first int               // index of its first name in validator.names (linear mode)
	n     int               // names seen
	set   map[uint64]int    // hash of a decoded name → the offset of the first name with that hash
	more  map[string]string // names whose hash collided with a different name's
}

type validator struct {
	b      []byte
	max    int
	stack  []byte   // '{' or '[' for each open container
	objs   []object // one for each open object
	names  []name   // the names of open objects in linear mode
	seed   maphash.Seed
	seeded bool
	// syntaxOnly: UTF-8 and repeated names are not checked (ValidSyntax)
	syntaxOnly bool
	// prefix: the value may be followed by anything; end is where it
	// ended (ValidatePrefix)
	prefix bool
	end    int
	// the longest names and objs were (what release must clear)
	hiNames, hiObjs int
	// hiDepth is the deepest nesting met (CheckPrefix records it)
	hiDepth int
}

// Validate reports whether doc is exactly one JSON value in valid UTF-8,
// nested at most maxDepth deep (arrays and objects count one level each: 1
// is depth 0, [] and {} depth 1, [{}] depth 2), whose objects never repeat
// a member name. maxDepth outside 1..MaxDepth is taken as MaxDepth. The
// error is an *Error.
func Validate(doc []byte, maxDepth int) error {
	if maxDepth < 1 || maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	v := pool.Get().(*validator)
	v.b, v.max, v.syntaxOnly = doc, maxDepth, false
	err := v.run()
	v.release()
	if err != nil {
		return err
	}
	return nil
}

// ValidatePrefix checks the JSON value at the start of doc (after optional
// whitespace) as Validate checks a whole document, and returns the index
// just after it; what follows the value is not looked at. It lets a
// reader of a larger document take a value's extent and check it in one
// pass. The error is an *Error.
func ValidatePrefix(doc []byte, maxDepth int) (end int, err error) {
	if maxDepth < 1 || maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	v := pool.Get().(*validator)
	v.b, v.max, v.syntaxOnly, v.prefix = doc, maxDepth, false, true
	if e := v.run(); e != nil {
		err = e
	}
	end = v.end
	v.release()
	if err != nil {
		return 0, err
	}
	return end, nil
}

// Checked is the record that one JSON value passed the checks of
// Validate: a reader that validated a value inside a larger document
// hands it on, and the store does not check the same bytes again. It
// keeps the value's depth (the deepest nesting in it), so it covers any
// limit the value is within. Only this package makes a Checked that
// proves anything (its fields are unexported; the zero value covers
// nothing). It refers to the bytes it checked, not a copy: it covers them
// only while they stay unchanged, which its holder must see to.
type Checked struct {
	p     *byte
	n     int
	depth int
}

// CheckPrefix validates the JSON value at the start of doc (after
// optional whitespace) as ValidatePrefix does, and returns the record of
// the check and the index just after the value; Bytes gives the value's
// bytes. The error is an *Error.
func CheckPrefix(doc []byte, maxDepth int) (Checked, int, error) {
	if maxDepth < 1 || maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	v := pool.Get().(*validator)
	v.b, v.max, v.syntaxOnly, v.prefix = doc, maxDepth, false, true
	if err := v.run(); err != nil {
		v.release()
		return Checked{}, 0, err
	}
	end, depth := v.end, v.hiDepth
	v.release()
	start := 0
	for start < end && isWS(doc[start]) {
		start++
	}
	val := doc[start:end]
	return Checked{p: unsafe.SliceData(val), n: len(val), depth: depth}, end, nil
}

// Bytes returns the checked value's bytes (nil for the zero Checked).
func (c Checked) Bytes() []byte {
	if c.n == 0 {
		return nil
	}
	return unsafe.Slice(c.p, c.n)
}

// Covers reports whether c is the record of a check of exactly doc — the
// same bytes in memory, not an equal copy — whose depth is within
// maxDepth, so that Validate(doc, maxDepth) accepts it.
func (c Checked) Covers(doc []byte, maxDepth int) bool {
	if maxDepth < 1 || maxDepth > MaxDepth {
		maxDepth = MaxDepth
	}
	return c.n > 0 && c.n == len(doc) && c.p == unsafe.SliceData(doc) && c.depth <= maxDepth
}

// ValidSyntax reports whether doc is one JSON value nested at most
// MaxDepth deep, checking neither UTF-8 nor repeated names: what
// encoding/json's json.Valid accepts (and so what the policy's decoder
// reads), in the same single pass without recursion.
func ValidSyntax(doc []byte) bool {
	v := pool.Get().(*validator)
	v.b, v.max, v.syntaxOnly = doc, MaxDepth, true
	err := v.run()
	v.release()
	return err == nil
}

// pool keeps validators' stacks between calls: validating a payload
// allocates nothing unless it is refused or has an object of many names
// or names with escapes.
var pool = sync.Pool{New: func() any { return new(validator) }}

// release clears v and returns it to the pool unless a payload grew its
// stacks far (those go to the garbage collector).
func (v *validator) release() {
	v.b, v.prefix, v.end = nil, false, 0
	clear(v.names[:v.hiNames]) // no slices of the payload left behind
	clear(v.objs[:v.hiObjs])
	v.hiNames, v.hiObjs, v.hiDepth = 0, 0, 0
	v.stack, v.objs, v.names = v.stack[:0], v.objs[:0], v.names[:0]
	if cap(v.stack) <= 1024 && cap(v.objs) <= 256 && cap(v.names) <= 1024 {
		pool.Put(v)
	}
}

// strPlain marks the bytes a string holds as they are: printable ASCII
// other than the quote and the backslash.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (v *validator) ws(i int) int {
	for i < len(v.b) && isWS(v.b[i]) {
		i++
	}
	return i
}

func (v *validator) syntax(i int, msg string) *Error {
	return &Error{Offset: i, Rule: RuleSyntax, Msg: msg}
}

// bad reports the byte at i (or the end of the input) as unexpected.
func (v *validator) bad(i int, context string) *Error {
	if i >= len(v.b) {
		if len(v.b) == 0 || len(v.b) == v.ws(0) {
			return v.syntax(i, "empty input")
		}
		return v.syntax(i, "unexpected end of JSON input")
	}
	return v.syntax(i, fmt.Sprintf("invalid character %s %s", quoteChar(v.b[i]), context))
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c < 0x20 || c >= 0x7f:
		return fmt.Sprintf("%q", rune(c))
	}
	return "'" + string(rune(c)) + "'"
}

const (
	stValue = iota // a value is next
	stAfter        // a value ended
	stName         // a member name is next
)

func (v *validator) run() *Error {
	b := v.b
	i := 0
	state := stValue
	for {
		switch state {
		case stValue:
			i = v.ws(i)
			if i >= len(b) {
				return v.bad(i, "")
			}
			switch c := b[i]; {
			case c == '{' || c == '[':
				if len(v.stack) >= v.max {
					return &Error{Offset: i, Rule: RuleDepth, Limit: v.max, Msg: fmt.Sprintf("nested deeper than %d levels", v.max)}
				}
				v.stack = append(v.stack, c)
				v.hiDepth = max(v.hiDepth, len(v.stack))
				i = v.ws(i + 1)
				if c == '{' {
					v.objs = append(v.objs, object{first: len(v.names)})
					v.hiObjs = max(v.hiObjs, len(v.objs))
					if i < len(b) && b[i] == '}' {
						v.pop()
						i++
						state = stAfter
					} else {
						state = stName
					}
				} else if i < len(b) && b[i] == ']' {
					v.pop()
					i++
					state = stAfter
				}
			case c == '"':
				end, _, err := v.str(i)
				if err != nil {
					return err
				}
				i, state = end, stAfter
			case c == '-' || (c >= '0' && c <= '9'):
				end, err := v.number(i)
				if err != nil {
					return err
				}
				i, state = end, stAfter
			case c == 't':
				if err := v.literal(i, "true"); err != nil {
					return err
				}
				i, state = i+4, stAfter
			case c == 'f':
				if err := v.literal(i, "false"); err != nil {
					return err
				}
				i, state = i+5, stAfter
			case c == 'n':
				if err := v.literal(i, "null"); err != nil {
					return err
				}
				i, state = i+4, stAfter
			default:
				return v.bad(i, "looking for beginning of value")
			}
		case stAfter:
			if v.prefix && len(v.stack) == 0 {
				v.end = i
				return nil
			}
			i = v.ws(i)
			if len(v.stack) == 0 {
				if i < len(b) {
					return v.bad(i, "after top-level value")
				}
				return nil
			}
			top := v.stack[len(v.stack)-1]
			if i >= len(b) {
				return v.bad(i, "")
			}
			switch c := b[i]; {
			case c == ',':
				i++
				if top == '{' {
					i = v.ws(i)
					state = stName
				} else {
					state = stValue
				}
			case c == '}' && top == '{', c == ']' && top == '[':
				v.pop()
				i++
			case top == '{':
				return v.bad(i, "after object key:value pair")
			default:
				return v.bad(i, "after array element")
			}
		case stName:
			if i >= len(b) || b[i] != '"' {
				return v.bad(i, "looking for beginning of object key string")
			}
			end, esc, err := v.str(i)
			if err != nil {
				return err
			}
			if !v.syntaxOnly {
				if err := v.member(i, end, esc); err != nil {
					return err
				}
			}
			i = v.ws(end)
			if i >= len(b) || b[i] != ':' {
				return v.bad(i, "after object key")
			}
			i++
			state = stValue
		}
	}
}

// pop closes the innermost container.
func (v *validator) pop() {
	if v.stack[len(v.stack)-1] == '{' {
		o := &v.objs[len(v.objs)-1]
		v.names = v.names[:o.first]
		v.objs = v.objs[:len(v.objs)-1]
	}
	v.stack = v.stack[:len(v.stack)-1]
}

// str checks the string whose opening quote is at i and returns the index
// after its closing quote and whether it holds escapes.
func (v *validator) str(i int) (end int, esc bool, err *Error) {
	b := v.b
	j := i + 1
	for j < len(b) {
		// Eight bytes at a time while they are all plain.
		for j+8 <= len(b) {
			m := special8(binary.LittleEndian.Uint64(b[j:]))
			if m != 0 {
				j += bits.TrailingZeros64(m) >> 3
				break
			}
			j += 8
		}
		if j >= len(b) {
			break
		}
		c := b[j]
		if strPlain[c] {
			j++
			continue
		}
		switch {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return 0, false, v.bad(j+1, "")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				for k := j + 2; k < j+6; k++ {
					if k >= len(b) {
						return 0, false, v.bad(k, "")
					}
					if !isHex(b[k]) {
						return 0, false, v.bad(k, "in \\u hexadecimal character escape")
					}
				}
				j += 6
			default:
				return 0, false, v.bad(j+1, "in string escape code")
			}
		case c < 0x20:
			return 0, false, v.bad(j, "in string literal")
		case v.syntaxOnly:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, &Error{Offset: j, Rule: RuleUTF8, Msg: fmt.Sprintf("byte %#x in a string is not valid UTF-8", c)}
			}
			j += size
		}
	}
	return 0, false, v.bad(j, "")
}

// special8 marks (with its high bit) each byte of the eight in x, read
// little-endian, that a string cannot hold as it is: a control byte, the
// quote, the backslash, or a byte of a multi-byte UTF-8 sequence. Bytes
// above the first marked one may be marked wrongly (a borrow carries);
// the first marked byte is always a true one, and x has none when the
// result is 0.
func special8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := (x - 0x20*ones) &^ x
	q := x ^ '"'*ones
	bs := x ^ '\\'*ones
	return (ctl | (q-ones)&^q | (bs-ones)&^bs | x) & highs
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number checks the number starting at i and returns the index after it.
func (v *validator) number(i int) (int, *Error) {
	b := v.b
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j >= len(b):
		return 0, v.bad(j, "")
	case b[j] == '0':
		j++
	case b[j] >= '1' && b[j] <= '9':
		for j++; j < len(b) && isDigit(b[j]); j++ {
		}
	default:
		return 0, v.bad(j, "in numeric literal")
	}
	if j < len(b) && b[j] == '.' {
		j++
		if j >= len(b) || !isDigit(b[j]) {
			return 0, v.bad(j, "after decimal point in numeric literal")
		}
		for j++; j < len(b) && isDigit(b[j]); j++ {
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || !isDigit(b[j]) {
			return 0, v.bad(j, "in exponent of numeric literal")
		}
		for j++; j < len(b) && isDigit(b[j]); j++ {
		}
	}
	return j, nil
}

func (v *validator) literal(i int, lit string) *Error {
	for k := 1; k < len(lit); k++ {
		if i+k >= len(v.b) {
			return v.bad(i+k, "")
		}
		if v.b[i+k] != lit[k] {
			return v.bad(i+k, fmt.Sprintf("in literal %s (expecting %q)", lit, lit[k]))
		}
	}
	return nil
}

// member records the name whose string is b[start:end] in the innermost
// object and refuses it if that object already has it.
func (v *validator) member(start, end int, esc bool) *Error {
	s := v.b[start+1 : end-1]
	if esc {
		s, _ = unquote(v.b[start:end])
	}
	o := &v.objs[len(v.objs)-1]
	o.n++
	if o.set == nil {
		for _, n := range v.names[o.first:] {
			if string(n.s) == string(s) {
				return v.duplicate(start, s)
			}
		}
		if o.n <= linearNames {
			v.names = append(v.names, name{s: s, off: start})
			v.hiNames = max(v.hiNames, len(v.names))
			return nil
		}
		// Too many for pairwise comparison: hash them.
		if !v.seeded {
			v.seed, v.seeded = maphash.MakeSeed(), true
		}
		o.set = make(map[uint64]int, 2*linearNames)
		for _, n := range v.names[o.first:] {
			o.set[maphash.Bytes(v.seed, n.s)] = n.off
		}
		v.names = v.names[:o.first]
	}
	h := maphash.Bytes(v.seed, s)
	off, seen := o.set[h]
	if !seen {
		o.set[h] = start
		return nil
	}
	if string(v.nameAt(off)) == string(s) {
		return v.duplicate(start, s)
	}
	// Two names with one hash: keep the later ones by value.
	if o.more == nil {
		o.more = map[string]string{}
	}
	if _, dup := o.more[string(s)]; dup {
		return v.duplicate(start, s)
	}
	o.more[string(s)] = ""
	return nil
}

// nameAt decodes the member name whose opening quote is at off.
func (v *validator) nameAt(off int) []byte {
	end := SkipString(v.b, off)
	s, _ := unquote(v.b[off:end])
	return s
}

func (v *validator) duplicate(off int, s []byte) *Error {
	return &Error{Offset: off, Rule: RuleDuplicateKey, Key: string(s),
		Msg: fmt.Sprintf("member name %q repeated in one object (I-JSON, RFC 7493, allows each name once)", s)}
}
