package opa

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/policy"
)

// The decision cache. A decision depends only on the input fields the
// policy reads (and on the bundle, so a reload starts a new cache). At
// load, every reference to input in the compiled modules is collected as a
// path of constant keys, cut at the first non-constant one:
// input.principal.tenant → principal.tenant, input.event.payload[i].sku →
// event.payload. The cache key is the values at those paths, so changing
// any field the policy reads can change the decision and changing any
// other never reaches the policy. Policies that read the input as a whole,
// or call non-deterministic built-ins (time.now_ns, rand.intn, http.send,
// …), are not cached.

// analyzeInputs returns the input paths the bundle's modules read, false
// when the policy cannot be cached, and whether it reads the input as a
// whole (then it is not cached either).
func analyzeInputs(b bundle.Bundle) (paths [][]string, cacheable, whole bool) {
	seen := map[string]bool{}
	cacheable = true
	nondet := func(name string) {
		if bi, ok := ast.BuiltinMap[name]; ok && bi.Nondeterministic {
			cacheable = false
		}
	}
	var visit func(x any) bool
	visit = func(x any) bool {
		switch v := x.(type) {
		case ast.Ref:
			if v[0].Equal(ast.InputRootDocument) {
				var path []string
				for _, t := range v[1:] {
					s, ok := t.Value.(ast.String)
					if !ok {
						break
					}
					path = append(path, string(s))
				}
				if len(path) == 0 {
					cacheable, whole = false, true // the input as a whole
				} else if k := strings.Join(path, "\x00"); !seen[k] {
					seen[k] = true
					paths = append(paths, path)
				}
			}
			for _, t := range v[1:] { // indexes may hold references of their own
				ast.NewGenericVisitor(visit).Walk(t)
			}
			return true
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				cacheable, whole = false, true // a bare `input`
			}
		case ast.Call:
			if len(v) > 0 {
				nondet(v[0].String())
			}
		case *ast.Expr:
			if v.IsCall() {
				nondet(v.Operator().String())
			}
		}
		return false
	}
	for _, m := range b.Modules {
		if m.Parsed != nil {
			ast.NewGenericVisitor(visit).Walk(m.Parsed)
		}
	}
	return paths, cacheable, whole
}

// cacheKey renders the values at paths, each length-prefixed.
func cacheKey(in *policy.Input, paths [][]string) string {
	var b strings.Builder
	for _, p := range paths {
		v := lookupPath(in, p)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// undefined renders an input value that is absent.
const undefined = "\x00undefined"

// lookupPath renders the input value at path (absent: undefined). Lists
// are length-prefixed, so that different values never render alike.
func lookupPath(in *policy.Input, p []string) string {
	switch p[0] {
	case "action":
		if len(p) == 1 {
			return string(in.Action)
		}
	case "principal":
		switch {
		case len(p) == 1:
			return joinLP(in.Principal.ID, in.Principal.Tenant, in.Principal.KeyID) + joinLP(in.Principal.Roles...)
		case p[1] == "id" && len(p) == 2:
			return in.Principal.ID
		case p[1] == "tenant" && len(p) == 2:
			return in.Principal.Tenant
		case p[1] == "roles":
			return joinLP(in.Principal.Roles...)
		case p[1] == "key_id" && len(p) == 2:
			return in.Principal.KeyID
		}
	case "event":
		e := &in.Event
		if len(p) == 1 {
			return joinLP(e.Entity, e.Scope, e.Kind, string(e.Payload), e.CorrelationID, e.CausationID, e.IdempotencyKey, anyString(e.ExpectedClock))
		}
		if len(p) > 2 && p[1] != "payload" {
			return undefined // scalars have no fields
		}
		switch p[1] {
		case "entity":
			return e.Entity
		case "scope":
			return e.Scope
		case "kind":
			return e.Kind
		case "category":
			return strconv.Itoa(int(e.Category))
		case "type":
			return strconv.Itoa(int(e.Type))
		case "correlation_id":
			return e.CorrelationID
		case "causation_id":
			return e.CausationID
		case "idempotency_key":
			return e.IdempotencyKey
		case "expected_clock":
			return anyString(e.ExpectedClock)
		case "payload":
			if len(p) == 2 {
				return string(e.Payload)
			}
			return payloadAt(e.Payload, p[2:])
		}
	case "batch":
		if in.Batch == nil {
			return undefined
		}
		var buf [16]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(in.Batch.Size))
		binary.LittleEndian.PutUint64(buf[8:], uint64(in.Batch.Index))
		switch {
		case len(p) == 1:
			return string(buf[:])
		case p[1] == "size" && len(p) == 2:
			return string(buf[:8])
		case p[1] == "index" && len(p) == 2:
			return string(buf[8:])
		}
	case "plugin":
		return jsonAt(in.Plugin, p[1:]) // nil: null, as the policy sees it
	case "maintenance":
		return jsonAt(in.Maintenance, p[1:])
	case "entity":
		switch {
		case len(p) == 1:
			return strconv.FormatBool(in.Entity.Exists) + strconv.FormatUint(in.Entity.Clock, 10)
		case p[1] == "exists" && len(p) == 2:
			return strconv.FormatBool(in.Entity.Exists)
		case p[1] == "clock" && len(p) == 2:
			return strconv.FormatUint(in.Entity.Clock, 10)
		}
	}
	return undefined
}

// jsonAt renders the value at keys of x's JSON (the JSON inputValue gives
// the policy), as payloadAt does for a payload.
func jsonAt(x any, keys []string) string {
	b, err := json.Marshal(x)
	if err != nil {
		return "\x00invalid"
	}
	if len(keys) == 0 {
		return string(b)
	}
	return payloadAt(b, keys)
}

func anyString(v any) string {
	switch x := v.(type) {
	case nil:
		return "\x00null"
	case string:
		return x
	case uint64:
		return strconv.FormatUint(x, 10)
	default:
		// any other number (int, float64, json.Number): its printed value,
		// marked so it cannot collide with a string
		return "\x00#" + fmt.Sprint(x)
	}
}

// joinLP renders a list of strings, each length-prefixed.
func joinLP(ss ...string) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String()
}

// payloadAt renders the payload's value at keys as the policy sees it:
// each key names a member of an object — compared unescaped, the last one
// when the JSON repeats a key (as the policy's parser keeps; ijson.Lookup)
// — and never an array element.
func payloadAt(payload []byte, keys []string) string {
	if !ijson.ValidSyntax(payload) {
		return "\x00invalid" // never cached: evaluating it fails
	}
	v := payload
	for _, k := range keys {
		member, ok := ijson.Lookup(v, k)
		if !ok {
			return undefined
		}
		v = member
	}
	return string(v)
}

// decisionCache is a bounded map; when full it starts over (a decision is
// cheap to recompute, and the working set of a write policy is small).
type decisionCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]Decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: make(map[string]Decision)}
}

func (c *decisionCache) get(k string) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[k]
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(k string, d Decision) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = d
	c.mu.Unlock()
}
