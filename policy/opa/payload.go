package opa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/batpak-go/batpak/ijson"
)

// The payload in the policy input. Converting JSON to OPA values costs
// far more than the JSON's size (a 16 MB payload of 5M empty objects took
// over 1 GB and seconds), so the gate converts only what the policy reads
// — the payload paths the decision cache keys on (see cache.go): a policy
// reading input.event.payload.total_cents gets an object holding just
// total_cents, whatever else the payload holds — and at most
// Options.MaxInputValues values, under the evaluation's timeout. A
// policy that reads the payload as a whole (input.event.payload, or input
// itself) gets it whole, within the same limit.

// DefaultMaxInputValues is Options.MaxInputValues's default.
const DefaultMaxInputValues = 1 << 16

// errInputTooLarge: the payload holds more values where the policy reads
// it than Options.MaxInputValues, or a longer number than MaxNumberDigits.
var errInputTooLarge = errors.New("the payload is too large for the policy input")

// payloadReads is the part of the payload a policy reads: all of it
// (whole), or the members named in next, each read in part or whole.
type payloadReads struct {
	whole bool
	next  map[string]*payloadReads
}

// payloadReadsOf derives what the policy reads of the payload from the
// input paths it reads (inputWhole: it reads the input as a whole).
func payloadReadsOf(paths [][]string, inputWhole bool) *payloadReads {
	root := &payloadReads{whole: inputWhole}
	for _, p := range paths {
		if p[0] != "event" {
			continue
		}
		if len(p) == 1 || p[1] != "payload" {
			root.whole = root.whole || len(p) == 1
			continue
		}
		n := root
		for _, k := range p[2:] {
			if n.whole {
				break
			}
			if n.next == nil {
				n.next = map[string]*payloadReads{}
			}
			c := n.next[k]
			if c == nil {
				c = &payloadReads{}
				n.next[k] = c
			}
			n = c
		}
		n.whole = true
	}
	return root
}

// converter turns payload JSON into OPA values, counting them.
type converter struct {
	ctx context.Context
	n   int
	max int
}

// count counts one value; every 1024 it looks at ctx.
func (c *converter) count() error {
	c.n++
	if c.max > 0 && c.n > c.max {
		return fmt.Errorf("%w: more than %d where the policy reads it (opa.Options.MaxInputValues)", errInputTooLarge, c.max)
	}
	if c.n&1023 == 0 {
		return c.ctx.Err()
	}
	return nil
}

// payloadTerm is the payload as the policy sees it: the parts rd names.
func payloadTerm(ctx context.Context, payload []byte, rd *payloadReads, max int) (*ast.Term, error) {
	if len(payload) == 0 {
		return ast.NullTerm(), nil
	}
	// Reading parts must not make a payload that is not JSON readable:
	// the policy fails closed on it, as when it reads it whole.
	if !ijson.ValidSyntax(payload) {
		return nil, errors.New("not valid JSON")
	}
	c := &converter{ctx: ctx, max: max}
	t, err := c.part(payload, rd)
	if err == nil {
		err = ctx.Err()
	}
	return t, err
}

// part converts raw, reading only what rd names. Where rd names members of
// something other than an object, the policy's references to them are
// undefined: scalars are converted (one value), arrays become empty.
func (c *converter) part(raw []byte, rd *payloadReads) (*ast.Term, error) {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if rd.whole || len(raw) == 0 {
		return c.whole(raw)
	}
	switch raw[0] {
	case '{':
	case '[':
		if err := c.count(); err != nil {
			return nil, err
		}
		return ast.ArrayTerm(), nil
	default:
		return c.whole(raw)
	}
	if err := c.count(); err != nil {
		return nil, err
	}
	obj := ast.NewObject()
	// The members the policy reads, in one pass over the object however
	// many it reads (a Lookup each was a pass each: 50,000 fields of a
	// large payload ran past any timeout).
	found := make(map[string][]byte, min(len(rd.next), 64))
	ijson.Members(raw, func(name, v []byte) bool {
		if _, want := rd.next[string(name)]; want {
			found[string(name)] = v // the last of repeated names, as Lookup
		}
		return true
	})
	for k, sub := range rd.next {
		v, ok := found[k]
		if !ok {
			continue
		}
		t, err := c.part(v, sub)
		if err != nil {
			return nil, err
		}
		obj.Insert(ast.StringTerm(k), t)
	}
	if err := c.ctx.Err(); err != nil {
		return nil, err
	}
	return ast.NewTerm(obj), nil
}

// whole converts raw, valid JSON (payloadTerm checked it), entirely, as
// ast.ValueFromReader does (strings decoded as encoding/json does, numbers
// kept as written, of repeated member names the last) but without
// recursion, counting values.
func (c *converter) whole(raw []byte) (*ast.Term, error) {
	type frame struct {
		arr     []*ast.Term
		obj     ast.Object // nil for an array
		key     *ast.Term
		wantKey bool
	}
	var stack []frame
	for i := 0; ; {
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r' || raw[i] == ',' || raw[i] == ':') {
			i++
		}
		if i >= len(raw) {
			return nil, io.ErrUnexpectedEOF
		}
		var t *ast.Term
		switch ch := raw[i]; ch {
		case '{', '[':
			if err := c.count(); err != nil {
				return nil, err
			}
			if ch == '{' {
				stack = append(stack, frame{obj: ast.NewObject(), wantKey: true})
			} else {
				stack = append(stack, frame{})
			}
			i++
			continue
		case '}', ']':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unexpected %q", ch)
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if f.obj != nil {
				t = ast.NewTerm(f.obj)
			} else {
				t = ast.ArrayTerm(f.arr...)
			}
			i++
		case '"':
			end := ijson.SkipString(raw, i)
			if end < 0 {
				return nil, io.ErrUnexpectedEOF
			}
			s, ok := ijson.Unquote(raw[i:end])
			if !ok {
				return nil, fmt.Errorf("bad string at byte %d", i)
			}
			i = end
			if n := len(stack); n > 0 && stack[n-1].obj != nil && stack[n-1].wantKey {
				stack[n-1].key, stack[n-1].wantKey = ast.StringTerm(s), false
				continue
			}
			if err := c.count(); err != nil {
				return nil, err
			}
			t = ast.StringTerm(s)
		default:
			if err := c.count(); err != nil {
				return nil, err
			}
			j := i
			for j < len(raw) && strings.IndexByte("+-0123456789.eEtrufalsn", raw[j]) >= 0 {
				j++
			}
			switch lit := string(raw[i:j]); lit {
			case "true", "false":
				t = ast.BooleanTerm(lit == "true")
			case "null":
				t = ast.NullTerm()
			default:
				// Go parses a decimal in time that grows with the square of
				// its digits, at every comparison: a number is bounded.
				if n := numberSize(lit, textNumber); n > MaxNumberDigits {
					return nil, fmt.Errorf("%w: a number of %d digits, over the %d a number may have here (opa.MaxNumberDigits)", errInputTooLarge, n, MaxNumberDigits)
				}
				if t = ast.InternedIntNumberTermFromString(lit); t == nil {
					t = ast.NumberTerm(json.Number(lit))
				}
			}
			i = j
		}
		if len(stack) == 0 {
			return t, nil // one value: what follows is not read, as ast.ValueFromReader
		}
		top := &stack[len(stack)-1]
		if top.obj != nil {
			top.obj.Insert(top.key, t)
			top.wantKey = true
		} else {
			top.arr = append(top.arr, t)
		}
	}
}
