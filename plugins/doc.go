// Package plugins hosts WebAssembly plugins in a wazero sandbox: projection
// plugins that fold events into state and handler plugins that answer a
// cursor worker's batches with continue/stop and reactions. It is the only
// package that imports wazero, and it links no OPA (of package policy it
// needs only Principal). The ABI (exports, imports, byte layouts) is in
// package plugins/abi; Go plugin authors import sdk/guest.
//
// # Loading
//
//	host, _ := plugins.NewHost(plugins.HostOptions{CacheDir: "cache/"})
//	p, err := host.Load(ctx, wasmBytes, plugins.Manifest{
//		Name: "order-total", Version: "1.0.0", Kind: plugins.KindProjection,
//		SHA256: "…", // optional pin: other bytes are refused
//	})
//	state, found, err := core.Project(store, "order:1", plugins.Projection{P: p}, core.Consistent())
//	worker, err := store.CursorWorker(ctx, region, cfg, handlerPlugin.Handler(store))
//
// A module you did not write needs HostOptions.Compiler (CompileInto in a
// process whose time and memory you bound; server/plugincompiler is one):
// wazero's compiler and validator cannot be interrupted, and without a
// Compiler they run in your process unbounded. What the host bounds
// itself either way: a module declaring more than its bytes hold (a
// count or a length in any section, or in the custom section "name"),
// over MaxFunctions (defined, and imported and defined together),
// MaxTypes, MaxFunctionLocals, MaxModuleLocals, MaxTypeArity or
// MaxFunctionLookups, or written in a form wazero reads with other bytes than
// the host (a reference or heap type other than funcref and externref —
// in a ref.null, a table, an element segment —, a typed function
// reference as a value type, an element kind other than 0x00) is refused
// before wazero decodes it in the host's process, by Load and Inspect.
// Every runtime the host makes has wazero's debug information off:
// DWARF sections are never parsed, and a trap names functions, not
// source lines.
//
// Load checks the pin, compiles (cached on disk across runs when CacheDir
// is set), instantiates WASI and the host module first (a Go c-shared
// guest's _initialize runs at instantiation), checks the module's ABI
// version and exports, and refuses anything off with a *LoadError. Each
// plugin has its own runtime (so its own memory limit) and a pool of
// instances: instances are not goroutine-safe, calls check one out.
// Plugin.Swap replaces the module with a new version while calls go on.
//
// Inspect reads a module without loading it (what `batpak plugin inspect`
// prints): its exports and imports with their signatures, its declared
// memory limits, the plugin kinds its exports allow and the ABI version
// the module answers, in a sandbox of its own (instantiated only within
// the limits Load applies at the most a manifest allows).
//
// # Sandbox and determinism
//
// A plugin imports only WASI and batpak.log. By default it has no
// preopened directories (no files), no sockets, an empty environment, a
// clock fixed at 2020-01-01T00:00:00Z and a random source of zeros, so
// nothing outside the module reaches it. Manifest.Grants can give it the
// real clock, real randomness or environment variables; never files or
// network.
//
// The module itself can still remember: an instance is kept in its
// plugin's pool and reused, its globals and linear memory (a Go guest's
// package variables and heap) as its last call left them; the host does
// not reset them between calls (instantiating for every call would cost
// each call an instantiation, and a Go guest its _initialize). So the
// same events give byte-identical state only from a module that keeps
// nothing between calls that changes its answers. One that does (one
// counting its calls, say) answers by the instance a call checked out:
// what that instance answered before, which depends on the calls that
// ran at the same time, what the pool kept, faults, and on a cluster on
// the node.
//
// # Limits and faults
//
// Manifest.Limits bound every resource a plugin can make the host spend
// (defaults and ceilings on each field):
//
//	resource                  limit                           enforced
//	linear memory             memory_pages (32 MiB)           at Load (initial size) and at memory.grow
//	table elements            table_elements (131072)         at Load (declared); table maxima are lowered
//	                                                         so table.grow past it returns -1
//	tables, globals           tables (4), globals (1024)      at Load
//	element, data segments    table_elements; memory_pages    at Load
//	nested calls              call_depth (10000)              a counter Load adds to every function
//	call stack                stack_bytes (4 MiB, as          each call charges its frame: 8 × (4 +
//	                          charged; at most 256 MiB)       params + results + locals + body bytes)
//	time                      timeout (1s)                    the call is interrupted; a call that
//	                                                         returns after it faults all the same
//	output                    max_output_bytes (16 MiB)       after the call
//	reactions                 max_reactions (16384; at most   a handler's answer, before it is read
//	                          1048576)
//	log lines and bytes       log_lines (256), log_bytes      per call: excess dropped and counted
//	                          (64 KiB)                        (Plugin.Stats); 16 times over faults
//
// Load validates the module as written (a module that is not valid
// WebAssembly is refused), reads its sections itself (module.go) and
// refuses what it cannot measure. The two changes it makes to the module
// — lower table maxima and the call-stack counters — append to the module
// and move no index; Plugin.Digest and the sha256 pin are the original
// bytes'.
//
// The call stack is on the host's heap (wazero's, grown by doubling), so
// a running call holds up to about twice what stack_bytes charges. A
// frame costs what the function keeps across the calls it makes: wazero
// gives every such value a slot of its own, so a frame grows with the
// function's code, not only with its locals — 16 bytes for a frame that
// keeps nothing, about 8 KB for one keeping 600 live i64 locals. The
// charge over-estimates it (a Go guest's calls peak at about 0.5 MiB
// charged). wazero keeps a call's stack with the function handle the host
// reuses; after a call that charged more than 256 KiB the handles are
// dropped, so idle pooled instances hold little stack.
//
// A trap, a timeout, memory exhaustion, a stack over call_depth or
// stack_bytes, a log flood, an output over the cap or not following the
// ABI, or an error the plugin reports comes back as a *PluginFault (plugin, kind of fault,
// cause); the instance is discarded, and neither the host nor the store is
// affected. A call whose caller's context ends first fails with that
// context's error and is not counted as a fault. After Limits.MaxFaults
// consecutive faults the plugin is quarantined — calls fail at once with
// FaultQuarantined — until Reset or Swap.
//
// Beside any call the host holds each loaded module's compiled code
// (machine code and its metadata: CodeEstimate bounds what was measured)
// and each plugin's idle instances. HostOptions.Charge, when set, is
// asked for both and can refuse them: a load for want of room fails, an
// instance is closed instead of kept. Unload and Swap close a version's
// idle instances at once, and its code once the calls running on it
// return; a later call of an unloaded plugin fails with ErrUnloaded.
//
// # Logs
//
// batpak.log and the plugin's stderr (a line per newline, or per 4 KiB)
// go to HostOptions.Logger with the attributes plugin, version and stream
// ("log" or "stderr"); the text is escaped (control characters, invalid
// UTF-8) so a plugin cannot forge log lines or drive a terminal. A
// plugin's error text is escaped the same way.
//
// # Store seams
//
// Projection adapts a projection plugin to core.Project: state is the
// plugin's bytes, events are folded a batch (core.ProjectBatchSize) per
// call, and cached states are keyed by plugin name, version and module
// digest. Plugin.Handler adapts a handler plugin to core.CursorWorker: the
// reactions to each source event are written as one atomic batch through
// the store's write gates (action "plugin"), with correlation and
// causation from the source event and idempotency keys numbered within
// that source, so at-least-once redelivery writes nothing twice however
// the worker cuts its batches.
//
// A plugin is loaded on behalf of a principal (Host.LoadFor): its writes
// carry that principal (tenant, roles) as input.principal and the plugin's
// name, version and module digest as input.plugin, so a tenant policy
// admits a tenant's plugin into that tenant only and can tell one tenant's
// plugin from another's. A plugin loaded with Load writes as
// "plugin:NAME" with no tenant, which a tenant policy refuses.
package plugins
