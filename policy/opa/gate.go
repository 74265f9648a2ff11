package opa

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fsnotify/fsnotify"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/batpak-go/batpak/policy"
)

// DecisionPath is where an OPA policy's write decision lives: an object
// with allow (bool) and deny (a set of {code, message, ...} objects or of
// strings).
const DecisionPath = "data.batpak.write"

// Gate is a policy.Gate that asks an Open Policy Agent (Rego v1) bundle. It
// fails closed: a bundle without a decision, an undefined result, a
// malformed decision or an evaluation error denies with POLICY_ERROR and
// the cause. Reload swaps bundles atomically; a broken bundle is refused
// and the loaded one stays in force. Decisions are cached on exactly the
// input fields the policy reads (see the package documentation).
type Gate struct {
	name   string
	source string // bundle directory or tarball
	cur    atomic.Pointer[loadedPolicy]
	mu     sync.Mutex // serialises reloads
	opts   Options
	stats  struct{ decisions, cached, denied, errors atomic.Uint64 }
}

// Stats counts a Gate's decisions since Load (reloads keep counting).
type Stats struct {
	Decisions uint64 // every Decide (and Evaluate)
	CacheHits uint64 // decisions answered from the decision cache
	Denials   uint64 // decisions that refused (errors included)
	Errors    uint64 // decisions that failed to evaluate (POLICY_ERROR)
}

// Stats returns the gate's counters; safe for concurrent use.
func (g *Gate) Stats() Stats {
	return Stats{
		Decisions: g.stats.decisions.Load(),
		CacheHits: g.stats.cached.Load(),
		Denials:   g.stats.denied.Load(),
		Errors:    g.stats.errors.Load(),
	}
}

// DefaultTimeout is Options.Timeout's default, as the server's and the
// CLI's: a bound on a runaway policy, well above a typical decision
// (microseconds to a millisecond) so that a cold first decision on a
// loaded machine is not denied.
const DefaultTimeout = time.Second

// Options tunes a Gate.
type Options struct {
	// Name is the gate's name in denials. Default "opa".
	Name string
	// CacheSize bounds the decision cache (entries); 0 means 65536, a
	// negative value turns the cache off.
	CacheSize int
	// Timeout bounds one evaluation (wall time), building its input
	// included; 0 means DefaultTimeout. A timeout denies (POLICY_ERROR).
	Timeout time.Duration
	// MaxInputValues bounds the JSON values (objects, arrays, strings,
	// numbers, booleans, nulls) of the payload converted for one
	// evaluation. Only what the policy reads is converted: the members on
	// its input.event.payload.… paths, or the payload whole if it reads
	// input.event.payload or input as a whole. Exactly this many are
	// converted; one more denies with POLICY_ERROR naming the limit. 0
	// means DefaultMaxInputValues (65536); a negative value: no limit.
	MaxInputValues int
	// Sandboxed compiles the bundle with SandboxCapabilities: for a
	// bundle its server's operator did not write (a tenant's). A module
	// calling a built-in that reaches outside the policy (the network,
	// files, the host's environment) does not compile.
	Sandboxed bool
}

type loadedPolicy struct {
	query    rego.PreparedEvalQuery
	revision string
	cache    *decisionCache // nil: not cacheable
	paths    [][]string     // input paths the policy reads
	reads    *payloadReads  // the parts of the payload the policy reads
	hasAllow bool           // the policy defines an allow rule
	parts    bool           // query is decisionQuery, not DecisionPath
}

// decisionQuery asks for the decision's allow and deny only, each as a
// list of its values (empty: undefined), so that the rules of the package
// nothing in the decision depends on are never evaluated (asking for
// data.batpak.write evaluates every rule of the package). A policy that
// defines data.batpak.write as a whole is asked for it whole.
const decisionQuery = "allow := [x | x := data.batpak.write.allow]; deny := [x | x := data.batpak.write.deny]"

// Load loads the bundle at path — a directory of .rego modules and
// data.json/data.yaml files (a .manifest's roots and revision respected),
// or a bundle tarball (.tar.gz) of the same — and compiles it, leaving out
// its *_test.rego files (a tarball's as a directory's). Errors name the
// file and line of compile errors.
func Load(ctx context.Context, path string, opts Options) (*Gate, error) {
	if opts.Name == "" {
		opts.Name = "opa"
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 1 << 16
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxInputValues == 0 {
		opts.MaxInputValues = DefaultMaxInputValues
	}
	g := &Gate{name: opts.Name, source: path, opts: opts}
	if err := g.Reload(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// Name implements policy.Gate.
func (g *Gate) Name() string { return g.name }

// Revision is the loaded bundle's revision (from its .manifest).
func (g *Gate) Revision() string { return g.cur.Load().revision }

// InputPaths lists the input paths the loaded policy reads (what the
// decision cache keys on), e.g. "principal.tenant", written as JoinPath
// writes them (event.payload["a.b"] for a member named a.b); nil when
// the policy reads the input as a whole or uses non-deterministic
// built-ins (no caching then).
func (g *Gate) InputPaths() []string {
	p := g.cur.Load()
	if p.cache == nil {
		return nil
	}
	out := make([]string, len(p.paths))
	for i, path := range p.paths {
		out[i] = JoinPath(path)
	}
	return out
}

// JoinPath writes an input path as Rego would: keys that are identifiers
// joined with ".", any other key (one holding a dot, say) as ["key"]
// quoted as JSON. SplitPath reads it back.
func JoinPath(keys []string) string {
	var b strings.Builder
	for i, k := range keys {
		if isIdent(k) {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(k)
			continue
		}
		q, _ := json.Marshal(k)
		b.WriteByte('[')
		b.Write(q)
		b.WriteByte(']')
	}
	return b.String()
}

// SplitPath reads a path JoinPath wrote; ok is false for one it could
// not have written.
func SplitPath(p string) (keys []string, ok bool) {
	for p != "" {
		switch {
		case p[0] == '[':
			end := strings.Index(p, "\"]")
			for end >= 0 && !json.Valid([]byte(p[1:end+1])) {
				next := strings.Index(p[end+1:], "\"]")
				if next < 0 {
					end = -1
					break
				}
				end += 1 + next
			}
			if end < 0 {
				return nil, false
			}
			var k string
			if json.Unmarshal([]byte(p[1:end+1]), &k) != nil {
				return nil, false
			}
			keys, p = append(keys, k), p[end+2:]
		default:
			if len(keys) > 0 {
				if p[0] != '.' {
					return nil, false
				}
				p = p[1:] // an identifier follows
			}
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			if !isIdent(p[:end]) {
				return nil, false
			}
			keys, p = append(keys, p[:end]), p[end:]
		}
	}
	return keys, len(keys) > 0
}

// isIdent reports whether k is a Rego identifier (written after a dot).
func isIdent(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Reload reads and compiles the bundle again. If it fails — unreadable,
// compile errors, no decision at data.batpak.write — the error says why
// and the loaded policy stays in force; on success the new one replaces
// it atomically (every evaluation sees one or the other) and the decision
// cache starts empty.
func (g *Gate) Reload(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, err := readBundle(g.source)
	if err != nil {
		return fmt.Errorf("batpak: policy bundle %s: %w", g.source, err)
	}
	if len(b.Modules) == 0 {
		return fmt.Errorf("batpak: policy bundle %s has no Rego modules", g.source)
	}
	hasAllow, hasDeny, whole := decisionRules(b)
	if !hasAllow && !hasDeny {
		return fmt.Errorf("batpak: policy bundle %s defines no decision at %s (neither allow nor deny in package batpak.write)", g.source, DecisionPath)
	}
	query := decisionQuery
	if whole {
		query = DecisionPath
	}
	ropts := []func(*rego.Rego){
		rego.Query(query),
		rego.ParsedBundle("batpak", &b),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true), // a built-in's error fails closed, never leaves a deny rule silently undefined
	}
	if g.opts.Sandboxed {
		ropts = append(ropts, rego.Capabilities(SandboxCapabilities()))
	}
	r := rego.New(ropts...)
	pq, err := r.PrepareForEval(ctx)
	if err != nil {
		return fmt.Errorf("batpak: policy bundle %s does not compile: %w", g.source, err)
	}
	lp := &loadedPolicy{query: pq, revision: b.Manifest.Revision, hasAllow: hasAllow, parts: !whole}
	paths, ok, whole := analyzeInputs(b)
	lp.reads = payloadReadsOf(paths, whole)
	if ok && g.opts.CacheSize > 0 {
		lp.paths = paths
		lp.cache = newDecisionCache(g.opts.CacheSize)
	}
	g.cur.Store(lp)
	return nil
}

func readBundle(path string) (bundle.Bundle, error) {
	st, err := os.Stat(path)
	if err != nil {
		return bundle.Bundle{}, err
	}
	var rd *bundle.Reader
	if st.IsDir() {
		rd = bundle.NewCustomReader(bundle.NewDirectoryLoader(path).WithFilter(skipTests))
	} else {
		f, err := os.Open(path)
		if err != nil {
			return bundle.Bundle{}, err
		}
		defer f.Close()
		rd = bundle.NewCustomReader(bundle.NewTarballLoader(f).WithFilter(skipTests))
	}
	return rd.WithRegoVersion(ast.RegoV1).WithSkipBundleVerification(true).Read()
}

// skipTests leaves *_test.rego files out of the policy, a directory's
// and a tarball's alike (they are for `batpak policy test`): a test's
// rules never join the decision, and its `with input as` never makes
// the gate read the input as a whole. Directories are kept, whatever
// their names.
func skipTests(path string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(path, "_test.rego")
}

// decisionRules reports whether the bundle's rules define the decision's
// allow and deny: rules in package batpak.write, ref-head rules such as
// write.allow in package batpak, or a rule defining data.batpak.write as a
// whole (that decision must then say allow itself: both are reported, and
// whole).
func decisionRules(b bundle.Bundle) (allow, deny, whole bool) {
	want := ast.MustParseRef(DecisionPath)
	for _, m := range b.Modules {
		if m.Parsed == nil {
			continue
		}
		for _, r := range m.Parsed.Rules {
			head := r.Head.Ref()
			if _, ok := head[0].Value.(ast.Var); !ok {
				continue
			}
			path := m.Parsed.Package.Path.Extend(head)
			if !path.HasPrefix(want) {
				continue
			}
			if len(path) == len(want) {
				allow, deny, whole = true, true, true
				continue
			}
			switch path[len(want)].Value {
			case ast.String("allow"):
				allow = true
			case ast.String("deny"):
				deny = true
			}
		}
	}
	return allow, deny, whole
}

// Evaluate implements policy.Gate.
func (g *Gate) Evaluate(ctx context.Context, in *policy.Input) *policy.Denial {
	d, _ := g.Decide(ctx, in)
	if d.Allowed {
		return nil
	}
	den := &policy.Denial{Gate: g.name, Reasons: d.Reasons, Revision: d.Revision}
	if len(d.Reasons) > 0 {
		den.Code, den.Message, den.Context = d.Reasons[0].Code, d.Reasons[0].Message, d.Reasons[0].Context
	}
	return den
}

// Decision is a policy's answer about one input.
type Decision struct {
	Allowed  bool
	Reasons  []policy.Reason // why not, when not allowed
	Revision string          // the bundle revision that decided
	Cached   bool            // answered from the decision cache
}

// Decide evaluates the policy for in. The error repeats a POLICY_ERROR
// reason (the decision is then a denial, never an allow).
func (g *Gate) Decide(ctx context.Context, in *policy.Input) (Decision, error) {
	d, err := g.decide(ctx, in)
	g.stats.decisions.Add(1)
	if d.Cached {
		g.stats.cached.Add(1)
	}
	if !d.Allowed {
		g.stats.denied.Add(1)
	}
	if err != nil {
		g.stats.errors.Add(1)
	}
	return d, err
}

func (g *Gate) decide(ctx context.Context, in *policy.Input) (Decision, error) {
	lp := g.cur.Load()
	if lp.cache == nil {
		return g.eval(ctx, lp, in)
	}
	buf := keyBufs.Get().(*[]byte)
	defer putKeyBuf(buf)
	key, cacheable := appendKey((*buf)[:0], in, lp.paths)
	*buf = key[:0]
	if !cacheable {
		return g.eval(ctx, lp, in)
	}
	if d, ok := lp.cache.get(key); ok {
		d.Cached = true
		return d, nil
	}
	d, err := g.eval(ctx, lp, in)
	if err == nil {
		lp.cache.put(key, d)
	}
	return d, err
}

func (g *Gate) eval(ctx context.Context, lp *loadedPolicy, in *policy.Input) (Decision, error) {
	fail := func(err error) (Decision, error) {
		return Decision{Revision: lp.revision, Reasons: []policy.Reason{{Code: policy.CodePolicyError, Message: err.Error()}}}, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	value, err := inputValue(ctx, in, lp.reads, g.opts.MaxInputValues)
	if err != nil {
		return fail(fmt.Errorf("building the policy input: %w", err))
	}
	rs, err := lp.query.Eval(ctx, rego.EvalParsedInput(value))
	if err != nil {
		return fail(fmt.Errorf("policy evaluation failed: %w", err))
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return fail(errors.New("policy decision data.batpak.write is undefined"))
	}
	var obj map[string]any
	if lp.parts {
		obj = map[string]any{}
		for _, k := range [...]string{"allow", "deny"} {
			switch vs, _ := rs[0].Bindings[k].([]any); len(vs) {
			case 0: // undefined
			case 1:
				obj[k] = vs[0]
			default:
				return fail(fmt.Errorf("policy decision %s has %d values", k, len(vs)))
			}
		}
	} else {
		var ok bool
		obj, ok = rs[0].Expressions[0].Value.(map[string]any)
		if !ok {
			return fail(fmt.Errorf("policy decision data.batpak.write is %T, want an object with allow and deny", rs[0].Expressions[0].Value))
		}
	}
	d := Decision{Revision: lp.revision}
	reasons, err := parseDeny(obj["deny"])
	if err != nil {
		return fail(err)
	}
	allow, present := obj["allow"]
	switch a := allow.(type) {
	case bool:
		d.Allowed = a && len(reasons) == 0
	case nil:
		if present {
			return fail(errors.New("policy decision allow is null, want true or false"))
		}
		// An allow rule that is undefined here does not allow; a policy
		// with deny rules only allows what it does not deny.
		d.Allowed = !lp.hasAllow && len(reasons) == 0
	default:
		return fail(fmt.Errorf("policy decision allow is %T, want a boolean", allow))
	}
	if !d.Allowed {
		if len(reasons) == 0 {
			reasons = []policy.Reason{{Code: policy.CodeNotAllowed, Message: "the policy did not allow this write"}}
		}
		d.Reasons = reasons
	}
	return d, nil
}

// What a denial keeps of the reasons a policy gives: the first
// MaxReasons (by code, then message), each code up to 256 bytes, message
// up to MaxReasonBytes and context up to MaxReasonBytes as JSON; a longer
// value is replaced by a note of its size. A decision's reasons go into
// error messages, problem documents and decision logs, and a policy can
// give a reason whose context is a gigabyte as JSON (a value built by
// doubling shares its parts; its text does not).
const (
	MaxReasons     = 100
	MaxReasonBytes = 64 << 10
	// MaxDecisionReasonBytes bounds a decision's reasons together (decisions
	// are cached): past it the rest are counted in a MORE_REASONS reason.
	MaxDecisionReasonBytes = 256 << 10
)

// reasonText is v as a reason's code or message: strings cut at max
// bytes, anything else printed if it is small.
func reasonText(v any, max int) string {
	if s, ok := v.(string); ok {
		if len(s) > max {
			cut := max
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
			return s[:cut] + fmt.Sprintf("… (%d bytes in all)", len(s))
		}
		return s
	}
	if n := goValueSize(v, max); n > max {
		return fmt.Sprintf("(a value of over %d bytes)", max)
	}
	return fmt.Sprint(v)
}

// goValueSize is about v's length as JSON (strings unescaped), counted
// up to limit+1.
func goValueSize(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n > limit {
			return
		}
		switch x := v.(type) {
		case string:
			n += len(x) + 2
		case json.Number:
			n += len(x)
		case []any:
			n += 2
			for _, e := range x {
				walk(e)
				n++
			}
		case map[string]any:
			n += 2
			for k, e := range x {
				n += len(k) + 4
				walk(e)
			}
		default:
			n += 24 // numbers, booleans, null
		}
	}
	walk(v)
	return min(n, limit+1)
}

// parseDeny reads the deny set: objects {code, message, ...} or strings.
func parseDeny(v any) ([]policy.Reason, error) {
	if v == nil {
		return nil, nil
	}
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("policy decision deny is %T, want a set", v)
	}
	out := make([]policy.Reason, 0, len(items))
	for _, it := range items {
		switch x := it.(type) {
		case string:
			out = append(out, policy.Reason{Code: "DENIED", Message: reasonText(x, MaxReasonBytes)})
		case map[string]any:
			r := policy.Reason{Context: map[string]any{}}
			for k, val := range x {
				switch k {
				case "code":
					r.Code = reasonText(val, 256)
				case "message", "msg":
					r.Message = reasonText(val, MaxReasonBytes)
				default:
					r.Context[k] = val
				}
			}
			if r.Code == "" {
				r.Code = "DENIED"
			}
			if len(r.Context) == 0 {
				r.Context = nil
			} else if n := goValueSize(r.Context, MaxReasonBytes); n > MaxReasonBytes {
				r.Context = map[string]any{"omitted": fmt.Sprintf("the reason's context is over %d bytes as JSON", MaxReasonBytes)}
			}
			out = append(out, r)
		default:
			return nil, fmt.Errorf("policy decision deny holds %T, want objects or strings", it)
		}
	}
	slices.SortFunc(out, func(a, b policy.Reason) int {
		return cmp.Or(strings.Compare(a.Code, b.Code), strings.Compare(a.Message, b.Message))
	})
	keep, total := 0, 0
	for keep < len(out) && keep < MaxReasons {
		r := &out[keep]
		size := len(r.Code) + len(r.Message)
		if r.Context != nil {
			size += goValueSize(r.Context, MaxReasonBytes)
		}
		if total+size > MaxDecisionReasonBytes && keep > 0 {
			break
		}
		total += size
		keep++
	}
	if more := len(out) - keep; more > 0 {
		out = append(out[:keep:keep], policy.Reason{Code: "MORE_REASONS", Message: fmt.Sprintf("and %d more reasons", more)})
	}
	return out, nil
}

// Watch reloads the bundle whenever it changes (debounced by 200ms) until
// ctx ends. Failed reloads are reported to onError (may be nil) and leave
// the loaded policy in force; so are watches that could not be added.
//
// What is watched: a directory bundle whole — every directory under it
// when Watch starts, and every directory created or moved under it later
// (walked when it appears, so the files already inside it count) — and
// its path from its parent directory, so that a bundle directory removed
// or renamed away and then made again (mv policies.new policies) is
// reloaded and watched again whole; in between, reloads fail (reported)
// and the loaded policy stays. A tarball is watched from its directory:
// a write, a removal or a rename onto its path reloads it. Not watched:
// the directory holding the bundle (removed or renamed, nothing more is
// seen), and anything reached through a symbolic link (links are not
// followed, nor is a link on the way to the bundle switched to another
// target noticed).
func (g *Gate) Watch(ctx context.Context, onError func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	report := func(err error) {
		if onError != nil && err != nil {
			onError(err)
		}
	}
	root, err := filepath.Abs(g.source)
	if err != nil {
		w.Close()
		return err
	}
	st, err := os.Stat(root)
	if err != nil {
		w.Close()
		return err
	}
	isDir := st.IsDir()
	sep := string(filepath.Separator)
	under := func(p string) bool { return p == root || strings.HasPrefix(p, root+sep) }
	// addTree watches dir and every directory under it.
	addTree := func(dir string) error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // gone again since: its removal is an event too
				}
				return err
			}
			if d.IsDir() {
				return w.Add(p)
			}
			return nil
		})
	}
	if parent := filepath.Dir(root); parent != root {
		if err := w.Add(parent); err != nil {
			if !isDir {
				w.Close()
				return err
			}
			report(fmt.Errorf("batpak: watching policy bundle %s from its parent directory (its replacement will not be noticed): %w", g.source, err))
		}
	}
	if isDir {
		if err := addTree(root); err != nil {
			w.Close()
			return err
		}
	}
	go func() {
		defer w.Close()
		var timer <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.Events:
				if !under(ev.Name) {
					continue // another entry of the bundle's parent directory
				}
				if isDir && ev.Name == root && ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
					// The bundle directory is gone (a directory moved away
					// keeps its watches under its old names): forget them,
					// and watch it again when it comes back.
					for _, p := range w.WatchList() {
						if under(p) {
							_ = w.Remove(p)
						}
					}
				}
				if isDir && ev.Has(fsnotify.Create) {
					if st, err := os.Lstat(ev.Name); err == nil && st.IsDir() {
						if err := addTree(ev.Name); err != nil {
							report(fmt.Errorf("batpak: watching policy bundle directory %s: %w", ev.Name, err))
						}
					}
				}
				timer = time.After(200 * time.Millisecond)
			case err := <-w.Errors:
				report(err)
			case <-timer:
				timer = nil
				report(g.Reload(ctx))
			}
		}
	}()
	return nil
}
