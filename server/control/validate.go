package control

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/batpak-go/batpak/core"
)

// Limits on recorded text.
const (
	MaxReasonBytes = 1024 // a suspension reason
	MaxNameBytes   = 200  // a key's name
	MaxKindBytes   = 32   // a cursor region's kind, as text
)

var (
	tenantIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	keyIDRE    = regexp.MustCompile(`^[a-z0-9]{1,64}$`)
	// cursorNameRE is core.NamedCursor's rule: a name is safe as a file name.
	cursorNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// shown quotes v for an error message, cut to 64 bytes.
func shown(v string) string {
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("%q", v)
}

// ValidTenantID reports whether id is a usable tenant id: 1..63 characters
// of a-z, 0-9 and '-', starting with a letter or digit
// (^[a-z0-9][a-z0-9-]{0,62}$). The error wraps ErrInvalid.
func ValidTenantID(id string) error {
	if !tenantIDRE.MatchString(id) {
		return fmt.Errorf("%w: tenant id %s: want 1..63 of a-z 0-9 -, starting with a letter or digit", ErrInvalid, shown(id))
	}
	return nil
}

// ValidCursorName reports whether name is a usable cursor name: core's
// named-cursor rule, 1..128 of A-Z a-z 0-9 . _ -, starting with a letter
// or digit. The error wraps ErrInvalid.
func ValidCursorName(name string) error {
	if !cursorNameRE.MatchString(name) {
		return fmt.Errorf("%w: cursor name %s: want 1..128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", ErrInvalid, shown(name))
	}
	return nil
}

// MinRate is the smallest positive rate a quota takes (per second: one
// a little under every 12 days).
const MinRate = 1e-6

// MaxBatchEventsLimit is the most events one batch can hold: a tenant
// store's batch limit (core's Config.Batch.MaxSize at its ceiling).
const MaxBatchEventsLimit = 4096

// Validate checks q: rates finite and 0 or at least MinRate (negative:
// no limit), bursts not
// negative, max_batch_events at most MaxBatchEventsLimit (negative: that
// limit), the other fields any value (negative: no limit). The error
// wraps ErrInvalid and names the field.
func (q Quotas) Validate() error {
	if q.MaxBatchEvents > MaxBatchEventsLimit {
		return fmt.Errorf("%w: quotas.max_batch_events: %d: at most %d (a store's batch limit; negative: that limit)", ErrInvalid, q.MaxBatchEvents, MaxBatchEventsLimit)
	}
	rate := func(name string, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: quotas.%s: must be a finite number (negative: no limit)", ErrInvalid, name)
		}
		if v > 0 && v < MinRate {
			return fmt.Errorf("%w: quotas.%s: %g: a positive rate is at least %g a second (negative: no limit)", ErrInvalid, name, v, MinRate)
		}
		return nil
	}
	burst := func(name string, v int) error {
		if v < 0 {
			return fmt.Errorf("%w: quotas.%s: %d: must be 0 (the default) or positive", ErrInvalid, name, v)
		}
		return nil
	}
	for _, err := range []error{
		rate("events_per_second", q.EventsPerSecond),
		rate("bytes_per_second", q.BytesPerSecond),
		rate("requests_per_second", q.RequestsPerSecond),
		burst("events_burst", q.EventsBurst),
		burst("bytes_burst", q.BytesBurst),
		burst("requests_burst", q.RequestsBurst),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// burstOver is a bucket's size: the tenant's own, or, when it set the
// rate alone, the default bucket scaled to its rate (so a tenant held to
// 1 request a second does not keep the default's bucket of thousands),
// at least 1; else (no rate set, or no limit: negative) the default's.
func burstOver(burst int, rate float64, defBurst int, defRate float64) int {
	switch {
	case burst != 0:
		return burst
	case rate <= 0 || defRate <= 0 || defBurst <= 0: // unset, or no limit (negative)
		return defBurst
	}
	return int(min(max(math.Round(float64(defBurst)*rate/defRate), 1), math.MaxInt32))
}

// Over returns q with every zero field taken from def; a bucket's size
// left out beside a rate set follows the rate (burstOver).
func (q Quotas) Over(def Quotas) Quotas {
	pick := func(v, d int) int {
		if v != 0 {
			return v
		}
		return d
	}
	out := q
	if out.StorageBytes == 0 {
		out.StorageBytes = def.StorageBytes
	}
	if out.IndexBytes == 0 {
		out.IndexBytes = def.IndexBytes
	}
	if out.EventsPerSecond == 0 {
		out.EventsPerSecond = def.EventsPerSecond
	}
	if out.BytesPerSecond == 0 {
		out.BytesPerSecond = def.BytesPerSecond
	}
	if out.RequestsPerSecond == 0 {
		out.RequestsPerSecond = def.RequestsPerSecond
	}
	out.EventsBurst = burstOver(q.EventsBurst, q.EventsPerSecond, def.EventsBurst, def.EventsPerSecond)
	out.RequestsBurst = burstOver(q.RequestsBurst, q.RequestsPerSecond, def.RequestsBurst, def.RequestsPerSecond)
	out.BytesBurst = burstOver(q.BytesBurst, q.BytesPerSecond, def.BytesBurst, def.BytesPerSecond)
	out.MaxPayloadBytes = pick(q.MaxPayloadBytes, def.MaxPayloadBytes)
	out.MaxBatchEvents = pick(q.MaxBatchEvents, def.MaxBatchEvents)
	out.MaxSubscriptions = pick(q.MaxSubscriptions, def.MaxSubscriptions)
	out.MaxCursors = pick(q.MaxCursors, def.MaxCursors)
	pick64 := func(v, d int64) int64 {
		if v != 0 {
			return v
		}
		return d
	}
	out.PluginMemoryBytes = pick64(q.PluginMemoryBytes, def.PluginMemoryBytes)
	out.PluginCallMillis = pick(q.PluginCallMillis, def.PluginCallMillis)
	out.PluginOutputBytes = pick64(q.PluginOutputBytes, def.PluginOutputBytes)
	out.PluginLogLines = pick(q.PluginLogLines, def.PluginLogLines)
	out.PluginLogBytes = pick64(q.PluginLogBytes, def.PluginLogBytes)
	out.MaxPlugins = pick(q.MaxPlugins, def.MaxPlugins)
	out.MaxPluginVersions = pick(q.MaxPluginVersions, def.MaxPluginVersions)
	out.MaxModuleBytes = pick64(q.MaxModuleBytes, def.MaxModuleBytes)
	out.MaxWorkers = pick(q.MaxWorkers, def.MaxWorkers)
	out.UploadBytesPerHour = pick64(q.UploadBytesPerHour, def.UploadBytesPerHour)
	out.ControlChangesPerDay = pick(q.ControlChangesPerDay, def.ControlChangesPerDay)
	return out
}

// Sync settings.
const (
	SyncDurable  = "durable"
	SyncBuffered = "buffered"
)

// Validate checks s: Sync is "", "durable" or "buffered";
// DecisionAllowSample is 0..1. The error wraps ErrInvalid and names the
// field.
func (s Settings) Validate() error {
	if !(s.DecisionAllowSample >= 0 && s.DecisionAllowSample <= 1) {
		return fmt.Errorf("%w: settings.decision_allow_sample %v: want 0 to 1", ErrInvalid, s.DecisionAllowSample)
	}
	switch s.Sync {
	case "", SyncDurable, SyncBuffered:
		return nil
	}
	return fmt.Errorf("%w: settings.sync %s: want \"durable\" or \"buffered\"", ErrInvalid, shown(s.Sync))
}

// Validate checks r's shape (the kind's syntax is the HTTP layer's to
// parse): entity and scope as core coordinates allow (at most 1024 bytes
// of UTF-8 without NUL), kind at most MaxKindBytes, category 0..15.
func (r Region) Validate() error {
	part := func(name, v string) error {
		if v == "" {
			return nil
		}
		if len(v) > core.MaxCoordinatePartBytes || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: region.%s: want at most %d bytes of UTF-8 without NUL", ErrInvalid, name, core.MaxCoordinatePartBytes)
		}
		return nil
	}
	if err := part("entity", r.Entity); err != nil {
		return err
	}
	if err := part("scope", r.Scope); err != nil {
		return err
	}
	if len(r.Kind) > MaxKindBytes || !utf8.ValidString(r.Kind) {
		return fmt.Errorf("%w: region.kind: want at most %d bytes of text", ErrInvalid, MaxKindBytes)
	}
	if r.Category != nil && (*r.Category < 0 || *r.Category > 15) {
		return fmt.Errorf("%w: region.category %d: want 0..15", ErrInvalid, *r.Category)
	}
	return nil
}

func regionEqual(a, b Region) bool {
	if a.Entity != b.Entity || a.Scope != b.Scope || a.Kind != b.Kind {
		return false
	}
	if (a.Category == nil) != (b.Category == nil) {
		return false
	}
	return a.Category == nil || *a.Category == *b.Category
}

func (c CursorDef) clone() CursorDef {
	if c.Region.Category != nil {
		v := *c.Region.Category
		c.Region.Category = &v
	}
	return c
}

// ValidRole reports whether r is one of the access roles (reader, writer,
// admin): what the server lets a credential do.
func ValidRole(r Role) bool { return r == RoleReader || r == RoleWriter || r == RoleAdmin }

// MaxRoles bounds the roles of one key (access and application roles).
const MaxRoles = 16

// appRoleRE is the shape of an application role's name.
var appRoleRE = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,63}$`)

// ValidAppRole reports whether r can be an application role: 1..64 of
// a-z 0-9 _ . : -, starting with a letter. Application roles ("clerk",
// "cashier") grant nothing on the server; they flow, with the access
// roles, into the policy input (input.principal.roles), where a write
// policy decides what they allow.
func ValidAppRole(r Role) bool { return appRoleRE.MatchString(string(r)) }

// checkText refuses text longer than max bytes, not UTF-8, or holding
// control characters or bidirectional formatting characters (which make
// a name in a list or the console read as another: "\u202egnp.exe"
// shows as "exe.png").
func checkText(field, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%w: %s: %d bytes, at most %d", ErrInvalid, field, len(v), max)
	}
	if !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %s: want UTF-8 text without control characters", ErrInvalid, field)
	}
	if i := strings.IndexFunc(v, bidiControl); i >= 0 {
		return fmt.Errorf("%w: %s: holds the bidirectional formatting character %U at byte %d: want text that reads as it is stored", ErrInvalid, field, []rune(v[i:])[0], i)
	}
	return nil
}

// bidiControl reports the characters that change the direction text is
// shown in (Unicode's Bidi_Control property).
func bidiControl(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }

// ValidRoles checks a key's roles: 1..MaxRoles, no repeats, at least one
// access role (reader, writer, admin), the others application roles
// (ValidAppRole).
func ValidRoles(roles []Role) error {
	if len(roles) == 0 || len(roles) > MaxRoles {
		return fmt.Errorf("%w: roles: want 1..%d roles, at least one of reader, writer, admin", ErrInvalid, MaxRoles)
	}
	seen := map[Role]bool{}
	access := false
	for _, r := range roles {
		switch {
		case ValidRole(r):
			access = true
		case !ValidAppRole(r):
			return fmt.Errorf("%w: roles: %s is neither reader, writer nor admin, nor an application role name (1..64 of a-z 0-9 _ . : -, starting with a letter)", ErrInvalid, shown(string(r)))
		}
		if seen[r] {
			return fmt.Errorf("%w: roles: %s given twice", ErrInvalid, r)
		}
		seen[r] = true
	}
	if !access {
		return fmt.Errorf("%w: roles: want at least one of reader, writer, admin (application roles alone grant nothing)", ErrInvalid)
	}
	return nil
}

func validKey(k Key) error {
	if !keyIDRE.MatchString(k.ID) {
		return fmt.Errorf("%w: key id %s: want 1..64 of a-z 0-9", ErrInvalid, shown(k.ID))
	}
	if err := ValidTenantID(k.Tenant); err != nil {
		return err
	}
	if err := ValidRoles(k.Roles); err != nil {
		return err
	}
	if err := checkText("name", k.Name, MaxNameBytes); err != nil {
		return err
	}
	if k.Hash == ([32]byte{}) {
		return fmt.Errorf("%w: key hash is zero", ErrInvalid)
	}
	return nil
}
