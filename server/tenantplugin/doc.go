// Package tenantplugin hosts the tenants' own WebAssembly plugins in the
// server: uploads, kept versions, hot swaps, projections and each
// plugin's faults, quarantine and logs, visible to its tenant only.
//
// # Uploads
//
// Push takes a plugin manifest (plugins.Manifest as JSON; unknown members
// refused; at most control.MaxPluginManifestBytes, checked first) and a
// module. The manifest must pin the module: its "sha256"
// is the module's SHA-256, or the upload is refused. The module is at
// most the tenant's max_module_bytes (*LimitError); each limit the
// manifest asks (memory_pages, timeout, max_output_bytes, log_lines,
// log_bytes) is at most the tenant's (*LimitError naming the quota), and
// a limit it leaves out is the tenant's. The host's memory a plugin's
// calls use beside its linear memory is bounded by plugin_memory_bytes
// too: limits.stack_bytes and 8 bytes × limits.table_elements are each at
// most it (left out: the plugin host's default, 4 MiB and 1 MiB, or the
// quota if lower). limits.max_reactions is at most the plugin host's
// default (16384), whatever the manifest asks. The plugin host then validates,
// measures, compiles and instantiates the module (plugins.Host.LoadFor);
// a refusal is a *RejectedError carrying the host's reason. Only then is
// the module stored and the version recorded: a refused upload leaves
// nothing behind, and the active version stays. A tenant's changes run
// one at a time; Options.Checks (server.plugin_checks) bounds how many
// modules are checked and compiled at once across tenants.
//
// # Versions and storage
//
// A version is named by the manifest's version and holds one module and
// one manifest, never changed: the same version pushed again with the same
// module and manifest (control.SamePluginManifest) only activates it; with
// another module or another manifest it is control.ErrExists (409
// CONFLICT over HTTP): push a new version. Modules are kept
// content-addressed at <Options.Dir>/<tenant>/<sha256>.wasm (written to a
// temporary file, synced and renamed before anything refers to them);
// each version, with its manifest, is recorded in the control plane
// (control.Plane.AddPluginVersion, SwapPlugin, DeletePlugin: system-store
// kinds 5:1..5:4), the source of truth of which version is active. After
// Open the active version of every plugin is loaded again from its file,
// in the background (tenants side by side, each taking its share of the
// checks; until then ErrLoading), its limits fitted to the tenant's
// quotas as they are then (lowered, never refused); one that does not
// load fails its projections with *NotLoadedError until another version
// is pushed or swapped in.
//
// With Options.Blobs (a cluster node's replicated blob store) modules are
// kept there instead (the cluster node removes those no version names:
// see server's package doc); a node that did not take a change
// learns of it from the control plane and calls Sync, which loads, swaps
// or unloads its plugins to match, so projections on every node serve the
// same version. Plugin status (counters, logs, faults, quarantine) stays
// per node: each node runs the plugins it serves and counts their faults;
// Gather makes a ClusterStatus of every node's part (the API's
// GET …/plugins/{name}?nodes=all asks the other members for theirs).
// A reset (Reset) is recorded in the control plane
// (control.TenantPlugin.Resets), and every node's Sync lifts its own
// quarantine of the plugin on seeing it.
//
// Swap makes a kept version active through plugins.Plugin.Swap: calls in
// progress finish on the old module, new calls run the new one, no call
// fails for the swap; the *plugins.Plugin a caller holds (Plugin) stays
// the same across swaps, and is closed when the plugin is deleted.
//
// Every tenant has its own plugin host (its plugins' names are its own);
// all hosts share one compiled-code cache (Options.CacheDir), so a module
// is compiled once whichever tenant uploads it first (a 2.7 MB Go guest:
// about 4 s cold, about 0.4 s for the next tenant). The cache is bounded
// (Options.CacheMaxBytes, default 4 GiB): after a module is compiled,
// past the bound, the markers of the modules that passed a check and the
// compiled modules written longest ago are removed, so a tenant
// uploading and deleting modules without end costs the disk at most the
// bound; a module whose compiled form was removed is compiled again
// when next loaded (through the Compiler, or within the limits it passed
// there before; see pruneCache).
//
// # Limits
//
// Options.Ceilings are the server's limits (server.plugins.*); a tenant's
// limits (Limits) are its quotas (control.Quotas.Plugin*, MaxPlugins,
// MaxPluginVersions, MaxModuleBytes; zero or negative: the ceiling)
// lowered to the ceilings. See Limits for each default and range.
//
// What loaded plugins hold in the server's memory between calls is
// bounded for all tenants together, a tenant at most half: their
// modules' compiled code (Options.CodeBytes, each module charged
// plugins.CodeEstimate before it is compiled and what it compiled to
// once it is; a load past it is refused with a *RoomError) and their idle instances (Options.IdleBytes; past it
// an instance is closed after its call). Resident reports both.
//
// # Projections
//
// Project folds an entity's events through a projection plugin with
// core.ProjectIfChanged, continuing from the tenant store's projection
// cache (the server gives every store a view of one StateCache, bounded
// in bytes for all tenants together): an unchanged entity costs no
// plugin call. ETag derives a projection's entity tag from the entity's
// generation, the module's digest and the state's own digest (so a
// redaction, which changes a state and not the generation, changes it).
//
// # Faults and logs
//
// A plugin fault fails only the request that called it
// (*plugins.PluginFault), is counted and kept in the plugin's recent
// faults; after the manifest's max_faults consecutive faults the plugin is
// quarantined until Reset or a swap. Each tenant's plugin host logs to its
// plugins' own rings of recent lines (Options.LogLines), never to the
// server's log; Status shows them, with the faults, counters and limits,
// to the plugin's tenant. Both are in memory: a restart empties them.
package tenantplugin
