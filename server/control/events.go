package control

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// Scope is the scope of every control-plane event in the system store.
const Scope = "control"

// The recorded changes. Category 1: tenants and the operator credential;
// 2: keys; 3: cursor definitions; 4: tenants' policy bundles; 5: tenants'
// plugins (plugins.go); 6: hosted workers (workers.go). Their numbers are
// part of the system
// store's format: never renumber one.
var (
	kindTenantCreated    = core.MustKind(1, 1)
	kindTenantSuspended  = core.MustKind(1, 2)
	kindTenantResumed    = core.MustKind(1, 3)
	kindTenantDeleted    = core.MustKind(1, 4)
	kindTenantQuotas     = core.MustKind(1, 5)
	kindTenantSettings   = core.MustKind(1, 6)
	kindOperatorSet      = core.MustKind(1, 7)
	kindKeyIssued        = core.MustKind(2, 1)
	kindKeyRevoked       = core.MustKind(2, 2)
	kindCursorDefined    = core.MustKind(3, 1)
	kindCursorDeleted    = core.MustKind(3, 2)
	kindPolicyActivated  = core.MustKind(4, 1)
	kindPolicyRolledBack = core.MustKind(4, 2)
	kindPluginAdded      = core.MustKind(5, 1) // a version added and made active
	kindPluginSwapped    = core.MustKind(5, 2) // a kept version made active
	kindPluginDeleted    = core.MustKind(5, 3) // a plugin, or one inactive version, forgotten
	kindPluginKept       = core.MustKind(5, 4) // a version added, the active one unchanged
	kindPluginReset      = core.MustKind(5, 5) // the plugin's quarantine lifted, on every node
)

var kindNames = map[core.Kind]string{
	kindTenantCreated:    "tenant.created",
	kindTenantSuspended:  "tenant.suspended",
	kindTenantResumed:    "tenant.resumed",
	kindTenantDeleted:    "tenant.deleted",
	kindTenantQuotas:     "tenant.quotas_set",
	kindTenantSettings:   "tenant.settings_set",
	kindOperatorSet:      "operator.credential_set",
	kindKeyIssued:        "key.issued",
	kindKeyRevoked:       "key.revoked",
	kindCursorDefined:    "cursor.defined",
	kindCursorDeleted:    "cursor.deleted",
	kindPolicyActivated:  "policy.activated",
	kindPolicyRolledBack: "policy.rolled_back",
	kindPluginAdded:      "plugin.added",
	kindPluginSwapped:    "plugin.swapped",
	kindPluginDeleted:    "plugin.deleted",
	kindPluginKept:       "plugin.kept",
	kindPluginReset:      "plugin.reset",
}

// Change is one recorded control-plane change, as History returns it.
type Change struct {
	Sequence uint64           `json:"global_sequence"` // in the system store
	Time     time.Time        `json:"time"`
	Entity   string           `json:"entity"`
	Kind     string           `json:"kind"` // "tenant.created", "key.revoked", …
	By       policy.Principal `json:"by"`   // who made the change (the request's principal)
	// Payload is the recorded event's JSON: "by" and the change's fields
	// (a key's hash, never its secret).
	Payload json.RawMessage `json:"payload"`
}

// body is the payload of every control event; each kind uses its fields.
type body struct {
	By             policy.Principal `json:"by"`
	Tenant         string           `json:"tenant,omitempty"`
	Quotas         *Quotas          `json:"quotas,omitempty"`
	Settings       *Settings        `json:"settings,omitempty"`
	Reason         string           `json:"reason,omitempty"`
	Key            *keyRecord       `json:"key,omitempty"`
	Cursor         *cursorRecord    `json:"cursor,omitempty"`
	RevokedKeys    []string         `json:"revoked_keys,omitempty"`
	DeletedCursors []string         `json:"deleted_cursors,omitempty"`
	OperatorHash   string           `json:"operator_hash,omitempty"`
	Policy         *policyRecord    `json:"policy,omitempty"`
	Plugin         *pluginRecord    `json:"plugin,omitempty"`
	Worker         *workerRecord    `json:"worker,omitempty"`
}

type keyRecord struct {
	ID    string `json:"id"`
	Roles []Role `json:"roles,omitempty"`
	Name  string `json:"name,omitempty"`
	Hash  string `json:"hash,omitempty"` // hex SHA-256 of the token
}

type cursorRecord struct {
	Name   string  `json:"name"`
	Region *Region `json:"region,omitempty"`
	ID     string  `json:"id,omitempty"`
}

func encodeBody(b body) ([]byte, error) {
	out, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return out, nil
}

func hexHash(h [32]byte) string { return hex.EncodeToString(h[:]) }

func parseHash(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// change is one event as the state applies it.
type change struct {
	seq    uint64
	clock  uint64
	at     time.Time
	entity string
	kind   core.Kind
	body   body
	raw    json.RawMessage
}

func decode(ev core.StoredEvent) (change, error) {
	k := ev.Header.Kind
	if _, ok := kindNames[k]; !ok {
		return change{}, fmt.Errorf("unknown control kind %s (written by a newer server?)", k)
	}
	var b body
	if err := json.Unmarshal(ev.Payload, &b); err != nil {
		return change{}, fmt.Errorf("payload: %w", err)
	}
	c := change{seq: ev.GlobalSequence, clock: ev.Header.Clock, at: time.UnixMicro(ev.Header.Timestamp).UTC(),
		entity: ev.Coordinate.Entity, kind: k, body: b, raw: ev.Payload}
	// Check what apply relies on, so that a damaged record fails Open
	// instead of building a wrong state.
	switch k {
	case kindKeyIssued:
		if b.Key == nil {
			return change{}, fmt.Errorf("key.issued without a key")
		}
		if _, err := parseHash(b.Key.Hash); err != nil {
			return change{}, err
		}
	case kindKeyRevoked:
		if b.Key == nil {
			return change{}, fmt.Errorf("key.revoked without a key")
		}
	case kindCursorDefined, kindCursorDeleted:
		if b.Cursor == nil || (k == kindCursorDefined && b.Cursor.Region == nil) {
			return change{}, fmt.Errorf("%s without a cursor", kindNames[k])
		}
	case kindOperatorSet:
		if _, err := parseHash(b.OperatorHash); err != nil {
			return change{}, err
		}
	case kindWorkerStarted, kindWorkerStopped, kindWorkerQuarantined, kindWorkerReset, kindWorkerDeleted:
		if b.Worker == nil || (k == kindWorkerStarted && (b.Worker.Region == nil || b.Worker.Restart == nil || b.Worker.Restart.MaxRestarts == nil)) {
			return change{}, fmt.Errorf("%s without a worker", kindNames[k])
		}
	case kindPolicyActivated, kindPolicyRolledBack:
		if b.Policy == nil {
			return change{}, fmt.Errorf("%s without a policy", kindNames[k])
		}
		if err := ValidPolicyRevision(b.Policy.Revision); err != nil {
			return change{}, err
		}
		for _, r := range b.Policy.Pruned {
			if err := ValidPolicyRevision(r); err != nil {
				return change{}, err
			}
		}
	case kindPluginAdded, kindPluginKept, kindPluginSwapped, kindPluginDeleted, kindPluginReset:
		if b.Plugin == nil {
			return change{}, fmt.Errorf("%s without a plugin", kindNames[k])
		}
		if (k == kindPluginAdded || k == kindPluginKept) && ValidPolicyRevision(b.Plugin.Digest) != nil {
			return change{}, fmt.Errorf("%s without a module digest", kindNames[k])
		}
	}
	return c, nil
}

func (c change) public() Change {
	return Change{Sequence: c.seq, Time: c.at, Entity: c.entity, Kind: kindNames[c.kind], By: c.body.By, Payload: c.raw}
}

// state is what the log says, folded.
type state struct {
	tenants     map[string]*Tenant
	keys        map[string]Key                  // live keys by id
	tenantKeys  map[string]map[string]struct{}  // tenant → live key ids
	cursors     map[string]map[string]CursorDef // tenant → name → definition
	operator    [32]byte
	hasOperator bool
	clocks      map[string]uint64 // entity → events recorded (its next clock)
	policies    map[string]*TenantPolicy
	plugins     map[string]map[string]*TenantPlugin // tenant → name → plugin
	workers     map[string]map[string]WorkerDef     // tenant → name → worker
	spends      map[string]*spendLog                // tenant → its recent spends (Spending)
}

func newState() state {
	return state{
		tenants:    map[string]*Tenant{},
		keys:       map[string]Key{},
		tenantKeys: map[string]map[string]struct{}{},
		cursors:    map[string]map[string]CursorDef{},
		clocks:     map[string]uint64{},
		policies:   map[string]*TenantPolicy{},
		plugins:    map[string]map[string]*TenantPlugin{},
		workers:    map[string]map[string]WorkerDef{},
		spends:     map[string]*spendLog{},
	}
}

// apply folds one change into the state. It is the only place the state
// changes, for live changes and replay alike, and depends on nothing but
// the state and the change, so a replay rebuilds exactly what the live
// plane held.
func (s *state) apply(c change) {
	s.clocks[c.entity] = c.clock + 1
	b := c.body
	s.noteSpend(c)
	switch c.kind {
	case kindTenantCreated:
		delete(s.spends, b.Tenant)
		t := &Tenant{ID: b.Tenant, State: StateActive, Created: c.at}
		if b.Quotas != nil {
			t.Quotas = *b.Quotas
		}
		if b.Settings != nil {
			t.Settings = *b.Settings
		}
		s.tenants[b.Tenant] = t
	case kindTenantSuspended:
		if t := s.tenants[b.Tenant]; t != nil {
			t.State, t.SuspendReason = StateSuspended, b.Reason
		}
	case kindTenantResumed:
		if t := s.tenants[b.Tenant]; t != nil {
			t.State, t.SuspendReason = StateActive, ""
		}
	case kindTenantQuotas:
		if t := s.tenants[b.Tenant]; t != nil && b.Quotas != nil {
			t.Quotas = *b.Quotas
		}
	case kindTenantSettings:
		if t := s.tenants[b.Tenant]; t != nil && b.Settings != nil {
			t.Settings = *b.Settings
		}
	case kindTenantDeleted:
		// The event lists the keys and cursors it ends; every one the
		// tenant has is ended (the same set when the event was written).
		delete(s.tenants, b.Tenant)
		for id := range s.tenantKeys[b.Tenant] {
			delete(s.keys, id)
		}
		delete(s.tenantKeys, b.Tenant)
		delete(s.cursors, b.Tenant)
		delete(s.policies, b.Tenant)
		delete(s.plugins, b.Tenant)
		delete(s.workers, b.Tenant)
		delete(s.spends, b.Tenant)
	case kindWorkerStarted, kindWorkerStopped, kindWorkerQuarantined, kindWorkerReset, kindWorkerDeleted:
		s.applyWorker(c)
	case kindPolicyActivated, kindPolicyRolledBack:
		s.applyPolicy(c)
	case kindPluginAdded, kindPluginKept, kindPluginSwapped, kindPluginDeleted, kindPluginReset:
		s.applyPlugin(c)
	case kindKeyIssued:
		h, _ := parseHash(b.Key.Hash) // checked by decode, or made by hexHash
		s.keys[b.Key.ID] = Key{ID: b.Key.ID, Tenant: b.Tenant, Roles: b.Key.Roles, Name: b.Key.Name, Created: c.at, Hash: h}
		if s.tenantKeys[b.Tenant] == nil {
			s.tenantKeys[b.Tenant] = map[string]struct{}{}
		}
		s.tenantKeys[b.Tenant][b.Key.ID] = struct{}{}
	case kindKeyRevoked:
		delete(s.keys, b.Key.ID)
		delete(s.tenantKeys[b.Tenant], b.Key.ID)
	case kindOperatorSet:
		s.operator, _ = parseHash(b.OperatorHash)
		s.hasOperator = true
	case kindCursorDefined:
		if s.cursors[b.Tenant] == nil {
			s.cursors[b.Tenant] = map[string]CursorDef{}
		}
		s.cursors[b.Tenant][b.Cursor.Name] = CursorDef{Name: b.Cursor.Name, Tenant: b.Tenant, Region: *b.Cursor.Region, ID: b.Cursor.ID}
	case kindCursorDeleted:
		delete(s.cursors[b.Tenant], b.Cursor.Name)
	}
}
