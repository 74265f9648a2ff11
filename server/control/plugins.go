package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// PluginVersion is one accepted version of a tenant's plugin.
type PluginVersion struct {
	// Version is the manifest's version: unique within the plugin.
	Version string `json:"version"`
	// Digest is the hex SHA-256 of the module's bytes (its content
	// address under <root>/plugins/<tenant>/<digest>.wasm).
	Digest string `json:"digest"`
	Kind   string `json:"kind"`  // "projection" or "handler"
	Bytes  int64  `json:"bytes"` // the module's size
	// Manifest is the manifest as uploaded (JSON), its sha256 pin
	// included.
	Manifest json.RawMessage  `json:"manifest"`
	Uploaded time.Time        `json:"uploaded"`
	By       policy.Principal `json:"by"`
}

// TenantPlugin is one named plugin of a tenant: every kept version
// (oldest first) and the active one.
type TenantPlugin struct {
	Name        string            `json:"name"`
	Active      string            `json:"active"` // the active version
	Activated   *time.Time        `json:"activated,omitempty"`
	ActivatedBy *policy.Principal `json:"activated_by,omitempty"`
	Versions    []PluginVersion   `json:"versions"`
	// ResetSeq is the system store's sequence of the plugin's latest
	// recorded reset (ResetPlugin; 0: none). A node that has applied an
	// older one lifts its own quarantine of the plugin, so a reset
	// reaches every node of a cluster, where each runs the plugin and
	// counts its faults on its own. A sequence is never reused, not even
	// by a plugin deleted and added again under the same name.
	ResetSeq uint64 `json:"-"`
}

// ActiveVersion returns the active version's record.
func (tp TenantPlugin) ActiveVersion() (PluginVersion, bool) {
	return tp.Version(tp.Active)
}

// Version returns the record of version v.
func (tp TenantPlugin) Version(v string) (PluginVersion, bool) {
	for _, pv := range tp.Versions {
		if pv.Version == v {
			return pv, true
		}
	}
	return PluginVersion{}, false
}

type pluginRecord struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Digest   string          `json:"digest,omitempty"`
	Kind     string          `json:"kind,omitempty"`
	Bytes    int64           `json:"bytes,omitempty"`
	Manifest json.RawMessage `json:"manifest,omitempty"`
}

// MaxPluginManifestBytes bounds a plugin manifest as recorded.
const MaxPluginManifestBytes = 64 << 10

// PluginEntity is the system-store entity whose History records a
// tenant's plugin uploads, swaps and deletions.
func PluginEntity(tenant string) string { return "plugin:" + tenant }

var (
	pluginNameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	pluginVersionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$`)
)

// ValidPluginName checks a plugin's name: the manifest's rule, 1..64 of
// a-z 0-9 . _ -, starting with a letter or digit. The error wraps
// ErrInvalid.
func ValidPluginName(name string) error {
	if !pluginNameRE.MatchString(name) {
		return fmt.Errorf("%w: plugin name %s: want 1..64 of a-z 0-9 . _ -, starting with a letter or digit", ErrInvalid, shown(name))
	}
	return nil
}

// ValidPluginVersion checks a plugin version's form: 1..64 of A-Z a-z
// 0-9 . + _ -, starting with a letter or digit ("1.2.0", "v2-rc.1"). The
// error wraps ErrInvalid.
func ValidPluginVersion(v string) error {
	if !pluginVersionRE.MatchString(v) {
		return fmt.Errorf("%w: plugin version %s: want 1..64 of A-Z a-z 0-9 . + _ -, starting with a letter or digit", ErrInvalid, shown(v))
	}
	return nil
}

// AddPluginVersion records an accepted version of the tenant's plugin
// (the caller has stored and compiled the module first) and, when
// activate (or when the plugin is new), makes it the active version.
// A version already recorded with the same digest records nothing but
// the activation; with another digest or another manifest
// (SamePluginManifest) it is ErrExists: a version is immutable. ErrLimit when the
// tenant would hold more than maxPlugins plugins or the plugin more than
// maxVersions versions (a limit ≤ 0 is none). ErrNotFound for an unknown
// tenant; ErrInvalid for a malformed name, version or digest.
func (p *Plane) AddPluginVersion(ctx context.Context, tenant string, v PluginVersion, name string, activate bool, maxPlugins, maxVersions int) (TenantPlugin, error) {
	if err := ValidPluginName(name); err != nil {
		return TenantPlugin{}, err
	}
	if err := ValidPluginVersion(v.Version); err != nil {
		return TenantPlugin{}, err
	}
	if err := ValidPolicyRevision(v.Digest); err != nil {
		return TenantPlugin{}, fmt.Errorf("%w: plugin digest", err)
	}
	if len(v.Manifest) > MaxPluginManifestBytes {
		return TenantPlugin{}, fmt.Errorf("%w: plugin manifest: %d bytes, at most %d", ErrInvalid, len(v.Manifest), MaxPluginManifestBytes)
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(tenant); !ok {
		return TenantPlugin{}, fmt.Errorf("%w: tenant %q", ErrNotFound, tenant)
	}
	cur, exists := p.Plugin(tenant, name)
	if old, ok := cur.Version(v.Version); ok {
		if old.Digest != v.Digest {
			return TenantPlugin{}, fmt.Errorf("%w: plugin %s version %s is kept with another module (sha256 %s): give the new module a new version", ErrExists, name, v.Version, old.Digest)
		}
		if !SamePluginManifest(old.Manifest, v.Manifest) {
			return TenantPlugin{}, ChangedManifestError(name, v.Version)
		}
		if !activate || cur.Active == v.Version {
			return cur, nil
		}
		return p.recordPlugin(ctx, tenant, kindPluginSwapped, pluginRecord{Name: name, Version: v.Version})
	}
	if !exists && maxPlugins > 0 && len(p.Plugins(tenant)) >= maxPlugins {
		return TenantPlugin{}, fmt.Errorf("%w: the tenant has %d plugins, its limit (quotas.max_plugins)", ErrLimit, maxPlugins)
	}
	if maxVersions > 0 && len(cur.Versions) >= maxVersions {
		return TenantPlugin{}, fmt.Errorf("%w: plugin %s keeps %d versions, its limit (quotas.max_plugin_versions): delete one first", ErrLimit, name, maxVersions)
	}
	kind := kindPluginAdded
	if !activate && exists {
		kind = kindPluginKept
	}
	return p.recordPlugin(ctx, tenant, kind, pluginRecord{Name: name, Version: v.Version, Digest: v.Digest, Kind: v.Kind, Bytes: v.Bytes, Manifest: v.Manifest})
}

// SwapPlugin makes a kept version of the tenant's plugin active.
// ErrNotFound if there is no such plugin or version; swapping to the
// active version records nothing.
func (p *Plane) SwapPlugin(ctx context.Context, tenant, name, version string) (TenantPlugin, error) {
	p.lockChange()
	defer p.wmu.Unlock()
	cur, ok := p.Plugin(tenant, name)
	if !ok {
		return TenantPlugin{}, fmt.Errorf("%w: plugin %s", ErrNotFound, shown(name))
	}
	if _, ok := cur.Version(version); !ok {
		return TenantPlugin{}, fmt.Errorf("%w: version %s of plugin %s", ErrNotFound, shown(version), name)
	}
	if cur.Active == version {
		return cur, nil
	}
	return p.recordPlugin(ctx, tenant, kindPluginSwapped, pluginRecord{Name: name, Version: version})
}

// ResetPlugin records a reset of the tenant's plugin (a plugin.reset
// change; TenantPlugin.ResetSeq names it): every node that runs it lifts
// its quarantine and forgets its consecutive faults. ErrNotFound if there
// is no such plugin. A node older than this change kind cannot read it
// and stops its control plane (see the package doc): upgrade every node
// of a cluster before resetting plugins.
func (p *Plane) ResetPlugin(ctx context.Context, tenant, name string) (TenantPlugin, error) {
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Plugin(tenant, name); !ok {
		return TenantPlugin{}, fmt.Errorf("%w: plugin %s", ErrNotFound, shown(name))
	}
	return p.recordPlugin(ctx, tenant, kindPluginReset, pluginRecord{Name: name})
}

// DeletePlugin forgets a tenant's plugin (version "") or one of its
// versions that is not the active one (ErrInvalid for the active one:
// swap first, or delete the plugin). ErrNotFound if there is no such
// plugin or version. The whole plugin is not forgotten while a hosted
// worker of the tenant runs it (recorded as running or quarantined): an
// error wrapping ErrExists names the workers (stop or delete them, or
// start them with another plugin, first); a stopped worker does not
// hold it (starting it again needs the plugin back, or another). The
// caller removes the module files no version refers to any longer.
func (p *Plane) DeletePlugin(ctx context.Context, tenant, name, version string) error {
	p.lockChange()
	defer p.wmu.Unlock()
	cur, ok := p.Plugin(tenant, name)
	if !ok {
		return fmt.Errorf("%w: plugin %s", ErrNotFound, shown(name))
	}
	if version == "" {
		p.mu.RLock()
		ws := p.st.workersOfPlugin(tenant, name)
		p.mu.RUnlock()
		if len(ws) > 0 {
			return &InUseError{What: "plugin " + strconv.Quote(name), Users: ws, Advice: "stop or delete them first, or start them with another plugin"}
		}
	}
	if version != "" {
		if _, ok := cur.Version(version); !ok {
			return fmt.Errorf("%w: version %s of plugin %s", ErrNotFound, shown(version), name)
		}
		if cur.Active == version {
			return fmt.Errorf("%w: version %s is plugin %s's active version: swap to another first, or delete the plugin", ErrInvalid, version, name)
		}
	}
	_, err := p.recordPlugin(ctx, tenant, kindPluginDeleted, pluginRecord{Name: name, Version: version})
	return err
}

func (p *Plane) recordPlugin(ctx context.Context, tenant string, kind core.Kind, r pluginRecord) (TenantPlugin, error) {
	if _, err := p.record(ctx, kind, PluginEntity(tenant), body{Tenant: tenant, Plugin: &r}); err != nil {
		return TenantPlugin{}, err
	}
	tp, _ := p.Plugin(tenant, r.Name)
	return tp, nil
}

// Plugin returns the tenant's plugin called name and whether it exists.
func (p *Plane) Plugin(tenant, name string) (TenantPlugin, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	tp := p.st.plugins[tenant][name]
	if tp == nil {
		return TenantPlugin{Name: name, Versions: []PluginVersion{}}, false
	}
	out := *tp
	out.Versions = append([]PluginVersion{}, tp.Versions...)
	return out, true
}

// Plugins lists the tenant's plugins, by name.
func (p *Plane) Plugins(tenant string) []TenantPlugin {
	p.mu.RLock()
	names := make([]string, 0, len(p.st.plugins[tenant]))
	for n := range p.st.plugins[tenant] {
		names = append(names, n)
	}
	p.mu.RUnlock()
	slices.Sort(names)
	out := make([]TenantPlugin, 0, len(names))
	for _, n := range names {
		if tp, ok := p.Plugin(tenant, n); ok {
			out = append(out, tp)
		}
	}
	return out
}

// PluginTenants lists the tenants that have plugins (for loading them at
// start).
func (p *Plane) PluginTenants() []string {
	p.mu.RLock()
	out := make([]string, 0, len(p.st.plugins))
	for t, ps := range p.st.plugins {
		if len(ps) > 0 {
			out = append(out, t)
		}
	}
	p.mu.RUnlock()
	slices.Sort(out)
	return out
}

// applyPlugin folds a plugin change into the state.
func (s *state) applyPlugin(c change) {
	b := c.body
	if _, ok := s.tenants[b.Tenant]; !ok || b.Plugin == nil {
		return
	}
	r := b.Plugin
	ps := s.plugins[b.Tenant]
	if ps == nil {
		ps = map[string]*TenantPlugin{}
		s.plugins[b.Tenant] = ps
	}
	tp := ps[r.Name]
	at, by := c.at, b.By
	switch c.kind {
	case kindPluginAdded, kindPluginKept:
		if tp == nil {
			tp = &TenantPlugin{Name: r.Name}
			ps[r.Name] = tp
		}
		if _, ok := tp.Version(r.Version); !ok {
			tp.Versions = append(tp.Versions, PluginVersion{Version: r.Version, Digest: r.Digest, Kind: r.Kind, Bytes: r.Bytes,
				Manifest: r.Manifest, Uploaded: at, By: by})
		}
		if c.kind == kindPluginAdded || tp.Active == "" {
			tp.Active, tp.Activated, tp.ActivatedBy = r.Version, &at, &by
		}
	case kindPluginSwapped:
		if tp != nil {
			tp.Active, tp.Activated, tp.ActivatedBy = r.Version, &at, &by
		}
	case kindPluginReset:
		if tp != nil {
			tp.ResetSeq = c.seq
		}
	case kindPluginDeleted:
		if tp == nil {
			return
		}
		if r.Version == "" {
			delete(ps, r.Name)
			return
		}
		for i, v := range tp.Versions {
			if v.Version == r.Version {
				tp.Versions = append(tp.Versions[:i:i], tp.Versions[i+1:]...)
				break
			}
		}
	}
}

// SamePluginManifest reports whether two plugin manifests (JSON) say the
// same: equal once decoded, whatever their spacing and member order, the
// sha256 pin compared without regard to case. A manifest that is not
// JSON equals only the same bytes; an empty one (a version recorded
// without it) equals any.
func SamePluginManifest(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	ca, errA := canonicalManifest(a)
	cb, errB := canonicalManifest(b)
	if errA != nil || errB != nil {
		return string(a) == string(b)
	}
	return string(ca) == string(cb)
}

// canonicalManifest is a manifest decoded and written again: members in
// name order, no spacing, numbers as written, the sha256 pin in lower
// case.
func canonicalManifest(raw json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if m, ok := v.(map[string]any); ok {
		if pin, ok := m["sha256"].(string); ok {
			m["sha256"] = strings.ToLower(pin)
		}
	}
	return json.Marshal(v)
}

// ChangedManifestError refuses a push of a kept version (the same module)
// with another manifest: it wraps ErrExists.
func ChangedManifestError(name, version string) error {
	return fmt.Errorf("%w: plugin %s version %s is kept with another manifest: a version is immutable, push the changed manifest as a new version", ErrExists, name, version)
}
