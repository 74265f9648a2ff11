package opa

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
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
// …), are not cached, nor those reading more than MaxCachedPaths fields
// (each write would build a key of all of them).
//
// The key is built in a pooled buffer and looked up without a copy; only
// a new entry allocates.

// analyzeInputs returns the input paths the bundle's modules read, false
// when the policy cannot be cached, and whether it reads the input as a
// whole (then it is not cached either).
func analyzeInputs(b bundle.Bundle) (paths [][]string, cacheable, whole bool) {
	seen := map[string]bool{}
	cacheable = true
	nondet := func(name string) {
		if bi, ok := ast.BuiltinMap[name]; ok && (bi.Nondeterministic || readsTheClock[name]) {
			cacheable = false
		}
	}
	var visit func(x any) bool
	visit = func(x any) bool {
		switch v := x.(type) {
		case ast.Ref:
			// A built-in named as a value (`with f as rand.intn`, say) is
			// called all the same.
			nondet(v.String())
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
	if len(paths) > MaxCachedPaths {
		cacheable = false
	}
	return paths, cacheable, whole
}

// MaxCachedPaths is the most input fields a policy may read and still
// have its decisions cached.
const MaxCachedPaths = 1024

// readsTheClock names the built-ins OPA does not flag non-deterministic
// whose answer changes with time all the same: a certificate verified now
// may have expired at the next write.
var readsTheClock = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// appendKey appends the cache key of in to b: the values at paths, each
// followed by its length (4 bytes), so that different values never
// render alike. The payload is checked once per key, not once per path.
// ok is false, and the input not cached, when the values the policy
// reads take more than twice the payload's bytes and 64 KiB (fields read
// over and over down a deep chain of objects, each almost the whole
// payload), or reading the payload's nested objects would list more than
// eight times its bytes: building such a key would cost more than the
// decision it saves, whatever the policy.
func appendKey(b []byte, in *policy.Input, paths [][]string) (key []byte, ok bool) {
	pv := payloadView{raw: in.Event.Payload}
	maxKey := len(b) + 2*len(in.Event.Payload) + 64<<10
	for _, p := range paths {
		start := len(b)
		b = appendPath(b, in, p, &pv)
		if pv.idx != nil && pv.idx.Exceeded() || len(b) > maxKey {
			return b[:0], false
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(b)-start))
	}
	return b, true
}

// keyBufs holds buffers for building cache keys; one grown past
// maxPooledKey is not kept.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxPooledKey = 64 << 10

// putKeyBuf gives buf back to keyBufs unless it grew large.
func putKeyBuf(buf *[]byte) {
	if cap(*buf) <= maxPooledKey {
		keyBufs.Put(buf)
	}
}

// undefined renders an input value that is absent.
const undefined = "\x00undefined"

// payloadView is the event payload as the cache key reads it: checked
// once per key, and each object on the paths read once (ijson.Index), so
// a policy reading many fields of a large payload costs a pass over it,
// not a pass per field.
type payloadView struct {
	raw     []byte
	checked bool
	valid   bool
	idx     *ijson.Index
}

// at appends the payload's value at keys as the policy sees it: each key
// names a member of an object — compared unescaped, the last one when the
// JSON repeats a key (as the policy's parser keeps; ijson.Lookup) — and
// never an array element.
func (pv *payloadView) at(b []byte, keys []string) []byte {
	if !pv.checked {
		pv.checked, pv.valid = true, ijson.ValidSyntax(pv.raw)
		if pv.valid {
			pv.idx = ijson.NewIndex(pv.raw)
			pv.idx.MaxRead = 8*int64(len(pv.raw)) + 64<<10
		}
	}
	if !pv.valid {
		return append(b, "\x00invalid"...) // never cached: evaluating it fails
	}
	v, ok := pv.idx.At(keys...)
	if !ok {
		return append(b, undefined...)
	}
	return append(b, v...)
}

// appendPath appends the input value at path (absent: undefined). Lists
// are rendered with each element length-prefixed.
func appendPath(b []byte, in *policy.Input, p []string, pv *payloadView) []byte {
	switch p[0] {
	case "action":
		if len(p) == 1 {
			return append(b, in.Action...)
		}
	case "principal":
		switch {
		case len(p) == 1:
			b = appendLP(b, in.Principal.ID, in.Principal.Tenant, in.Principal.KeyID)
			return appendLP(b, in.Principal.Roles...)
		case p[1] == "id" && len(p) == 2:
			return append(b, in.Principal.ID...)
		case p[1] == "tenant" && len(p) == 2:
			return append(b, in.Principal.Tenant...)
		case p[1] == "roles":
			return appendLP(b, in.Principal.Roles...)
		case p[1] == "key_id" && len(p) == 2:
			return append(b, in.Principal.KeyID...)
		}
	case "event":
		e := &in.Event
		if len(p) == 1 {
			return appendLP(b, e.Entity, e.Scope, e.Kind, string(e.Payload), e.CorrelationID, e.CausationID, e.IdempotencyKey, anyString(e.ExpectedClock))
		}
		if len(p) > 2 && p[1] != "payload" {
			return append(b, undefined...) // scalars have no fields
		}
		switch p[1] {
		case "entity":
			return append(b, e.Entity...)
		case "scope":
			return append(b, e.Scope...)
		case "kind":
			return append(b, e.Kind...)
		case "category":
			return strconv.AppendInt(b, int64(e.Category), 10)
		case "type":
			return strconv.AppendInt(b, int64(e.Type), 10)
		case "correlation_id":
			return append(b, e.CorrelationID...)
		case "causation_id":
			return append(b, e.CausationID...)
		case "idempotency_key":
			return append(b, e.IdempotencyKey...)
		case "expected_clock":
			return append(b, anyString(e.ExpectedClock)...)
		case "payload":
			if len(p) == 2 {
				return append(b, e.Payload...)
			}
			return pv.at(b, p[2:])
		}
	case "batch":
		if in.Batch == nil {
			return append(b, undefined...)
		}
		switch {
		case len(p) == 1:
			b = binary.LittleEndian.AppendUint64(b, uint64(in.Batch.Size))
			return binary.LittleEndian.AppendUint64(b, uint64(in.Batch.Index))
		case p[1] == "size" && len(p) == 2:
			return binary.LittleEndian.AppendUint64(b, uint64(in.Batch.Size))
		case p[1] == "index" && len(p) == 2:
			return binary.LittleEndian.AppendUint64(b, uint64(in.Batch.Index))
		}
	case "plugin":
		if in.Plugin == nil {
			return appendNull(b, p) // nil: null, as the policy sees it
		}
		return appendJSONAt(b, in.Plugin, p[1:])
	case "maintenance":
		if in.Maintenance == nil {
			return appendNull(b, p)
		}
		return appendJSONAt(b, in.Maintenance, p[1:])
	case "entity":
		switch {
		case len(p) == 1:
			b = strconv.AppendBool(b, in.Entity.Exists)
			return strconv.AppendUint(b, in.Entity.Clock, 10)
		case p[1] == "exists" && len(p) == 2:
			return strconv.AppendBool(b, in.Entity.Exists)
		case p[1] == "clock" && len(p) == 2:
			return strconv.AppendUint(b, in.Entity.Clock, 10)
		}
	}
	return append(b, undefined...)
}

// appendNull appends what the policy sees at path p below a null member:
// null itself, or undefined for anything inside it.
func appendNull(b []byte, p []string) []byte {
	if len(p) == 1 {
		return append(b, "null"...)
	}
	return append(b, undefined...)
}

// appendJSONAt appends the value at keys of x's JSON (the JSON inputValue
// gives the policy), as payloadView.at does for a payload.
func appendJSONAt(b []byte, x any, keys []string) []byte {
	raw, err := json.Marshal(x)
	if err != nil {
		return append(b, "\x00invalid"...)
	}
	if len(keys) == 0 {
		return append(b, raw...)
	}
	return append(b, rawAt(raw, keys)...)
}

// rawAt is the value at keys of valid JSON v, or undefined (for the
// small documents the server makes: a Lookup per key).
func rawAt(v []byte, keys []string) []byte {
	for _, k := range keys {
		member, ok := ijson.Lookup(v, k)
		if !ok {
			return []byte(undefined)
		}
		v = member
	}
	return v
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

// appendLP appends a list of strings, each length-prefixed.
func appendLP(b []byte, ss ...string) []byte {
	for _, s := range ss {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	return b
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

func (c *decisionCache) get(k []byte) (Decision, bool) {
	var sum [maxRawKey + 1]byte
	k = shortKey(k, &sum)
	c.mu.RLock()
	d, ok := c.m[string(k)] // no copy of k
	c.mu.RUnlock()
	return d, ok
}

// MaxCachedReasonBytes bounds the reasons of a denial the decision cache
// keeps (codes, messages and contexts as JSON together): a larger one is
// evaluated again when asked again, so that a cache's memory is bounded by
// its entries, whatever the policy answers (a reason can quote a payload).
const MaxCachedReasonBytes = 512

// smallReasons reports whether reasons take at most MaxCachedReasonBytes.
func smallReasons(reasons []policy.Reason) bool {
	n := 0
	for _, r := range reasons {
		n += len(r.Code) + len(r.Message)
		if n <= MaxCachedReasonBytes && r.Context != nil {
			b, _ := json.Marshal(r.Context)
			n += len(b)
		}
		if n > MaxCachedReasonBytes {
			return false
		}
	}
	return true
}

func (c *decisionCache) put(k []byte, d Decision) {
	if !smallReasons(d.Reasons) {
		return
	}
	var sum [maxRawKey + 1]byte
	k = shortKey(k, &sum)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[string(k)] = d
	c.mu.Unlock()
}

// maxRawKey is the longest key a cache keeps as it is; a longer one (the
// key holds the values the policy reads: a payload field can be a
// megabyte) is kept as its SHA-256, so that the cache holds at most its
// entries' decisions, whatever the writes carry.
const maxRawKey = 64

// shortKey is k, or past maxRawKey its SHA-256 in sum (padded to one
// byte more than any raw key, so that the two never meet).
func shortKey(k []byte, sum *[maxRawKey + 1]byte) []byte {
	if len(k) <= maxRawKey {
		return k
	}
	h := sha256.Sum256(k)
	copy(sum[:], h[:])
	return sum[:]
}

// CacheKeys returns the input paths the loaded policy's decisions are
// cached on (each a list of keys: event, payload, amount) and whether they
// are cached at all; a DecisionCache built on them caches as the gate
// does (for a gate whose evaluations run in another process).
func (g *Gate) CacheKeys() ([][]string, bool) {
	p := g.cur.Load()
	if p.cache == nil {
		return nil, false
	}
	out := make([][]string, len(p.paths))
	for i, path := range p.paths {
		out[i] = slices.Clone(path)
	}
	return out, true
}

// DecisionCache caches a policy's decisions on the input fields it reads,
// as a Gate does, for a caller that evaluates the policy elsewhere: keyed
// on the paths Gate.CacheKeys gave, at most size decisions (then it starts
// over), each keyed on at most 65 bytes (a longer key is kept as its
// SHA-256) and with reasons of at most MaxCachedReasonBytes (Put skips a
// larger one). Cache only decisions that did not fail (Decide returned no
// error). A nil *DecisionCache caches nothing. Safe for concurrent use.
type DecisionCache struct {
	paths [][]string
	c     *decisionCache
}

// NewDecisionCache returns a cache keyed on paths (Gate.CacheKeys), or nil
// when cacheable is false, size is not positive or there are more than
// MaxCachedPaths paths.
func NewDecisionCache(paths [][]string, cacheable bool, size int) *DecisionCache {
	if !cacheable || size <= 0 || len(paths) > MaxCachedPaths {
		return nil
	}
	return &DecisionCache{paths: paths, c: newDecisionCache(size)}
}

// Get returns the decision cached for in's fields, if any (Cached set).
func (c *DecisionCache) Get(in *policy.Input) (Decision, bool) {
	if c == nil {
		return Decision{}, false
	}
	buf := keyBufs.Get().(*[]byte)
	defer putKeyBuf(buf)
	key, ok := appendKey((*buf)[:0], in, c.paths)
	*buf = key[:0]
	if !ok {
		return Decision{}, false
	}
	d, ok := c.c.get(key)
	d.Cached = ok
	return d, ok
}

// Put caches d for in's fields (not those of an input appendKey finds
// too costly to key).
func (c *DecisionCache) Put(in *policy.Input, d Decision) {
	if c == nil {
		return
	}
	buf := keyBufs.Get().(*[]byte)
	defer putKeyBuf(buf)
	key, ok := appendKey((*buf)[:0], in, c.paths)
	*buf = key[:0]
	if ok {
		c.c.put(key, d)
	}
}
