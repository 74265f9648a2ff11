// Command batpak works on a batpak event store in a local directory, or
// on a tenant of a running batpak server (see "Against a server").
//
// It is a thin shell over package core: every verb opens the store,
// does one thing and closes it. Write verbs (append, demo, import,
// snapshot, redact, compact, seal) open the store with core.Open and take
// its lock; read verbs (get, query, ancestors, verify, stats, export,
// plugin project) use core.OpenReadOnly, so they work beside a live writer
// and never change a file.
//
//	batpak append --entity E --scope S --kind CAT:TYPE --data JSON
//	              [--idempotency-key K] [--expect-clock N | --expect-new]
//	              [--correlation ID] [--causation ID] [-o FORMAT]
//	batpak get ID [-o FORMAT]
//	batpak query [--entity-prefix P] [--scope S] [--kind K] [--category C]
//	             [--clock-min N] [--clock-max N] [--limit N] [-o FORMAT]
//	             [--after ID|SEQ] [--since DURATION|TIME] [--follow]
//	batpak ancestors ID [--limit N] [-o FORMAT]
//	batpak descendants ID [--limit N] [--depth N] [-o tree|dot|json|yaml]
//	batpak correlation ID [--limit N] [-o tree|dot|json|yaml]
//	batpak verify [-o FORMAT] [--progress]
//	batpak stats [-o FORMAT]
//	batpak cursor ls | info NAME | reset NAME [--to SEQ | --to-end]   [-o FORMAT]
//	batpak demo [--orders N]
//	batpak config [-o FORMAT]
//	batpak version [-o FORMAT]   (also batpak --version)
//	batpak policy test DIR [--run REGEX] [-o FORMAT] [--coverage] [--threshold P] [--v0-compatible]
//	batpak policy eval [--bundle DIR] --input FILE [-o FORMAT]
//	batpak plugin build DIR [--out OUT.wasm]
//	batpak plugin inspect FILE [--manifest FILE] [-o FORMAT]
//	batpak plugin project --plugin FILE --entity E [--manifest FILE] [-o FORMAT]
//	batpak export [--out FILE] [--entity-prefix P] [--scope S] [--salvage]
//	batpak import FILE|-   [-o FORMAT]
//	batpak snapshot DEST   [-o FORMAT]
//	batpak redact ID | --entity E   [--dry-run] [-o FORMAT]
//	batpak compact [--merge] [--max-age D] [--max-per-entity N] [--tombstone-entity E] [--dry-run]
//	batpak seal
//
// FORMAT is table (the default), json (one object a line; --json is the
// same) or yaml (render.go). Every verb takes --log-level and
// --log-format; "batpak completion SHELL" prints a completion script that
// also completes flag values and, from the local store, entity names
// (completion.go).
//
// # Configuration
//
// Each setting can come from a flag, a BATPAK_* environment variable, a
// YAML config file or the built-in default, in that order of precedence:
//
//	key                           flag                            environment
//	data_dir                      --data-dir                      BATPAK_DATA_DIR
//	segment_max_bytes             --segment-max-bytes             BATPAK_SEGMENT_MAX_BYTES
//	compression                   --compression                   BATPAK_COMPRESSION
//	fd_budget                     --fd-budget                     BATPAK_FD_BUDGET
//	single_append_max_bytes       --single-append-max-bytes       BATPAK_SINGLE_APPEND_MAX_BYTES
//	broadcast_capacity            --broadcast-capacity            BATPAK_BROADCAST_CAPACITY
//	channel_capacity              --channel-capacity              BATPAK_CHANNEL_CAPACITY
//	pressure_retry_pct            --pressure-retry-pct            BATPAK_PRESSURE_RETRY_PCT
//	sync.every_n_events           --sync-every-n-events           BATPAK_SYNC_EVERY_N_EVENTS
//	sync.interval                 --sync-interval                 BATPAK_SYNC_INTERVAL
//	sync.mode                     --sync-mode                     BATPAK_SYNC_MODE
//	batch.max_size                --batch-max-size                BATPAK_BATCH_MAX_SIZE
//	batch.max_bytes               --batch-max-bytes               BATPAK_BATCH_MAX_BYTES
//	batch.group_commit_max_batch  --batch-group-commit-max-batch  BATPAK_BATCH_GROUP_COMMIT_MAX_BATCH
//	policy.dir                    --policy-dir                    BATPAK_POLICY_DIR
//	policy.timeout                --policy-timeout                BATPAK_POLICY_TIMEOUT
//	principal.id                  --principal-id                  BATPAK_PRINCIPAL_ID
//	principal.tenant              --tenant                        BATPAK_PRINCIPAL_TENANT
//	principal.roles               --roles                         BATPAK_PRINCIPAL_ROLES
//
// The config file is --config FILE, else $BATPAK_CONFIG, else the first
// that exists of ./batpak.yaml, ./config.yaml when its first line begins
// "# batpak configuration" (so another tool's config.yaml is never read),
// and $XDG_CONFIG_HOME/batpak/config.yaml (~/.config/batpak/config.yaml).
// The repository's config.yaml (which begins so) documents every key
// with its default and range. Unknown keys are an error in a file named
// with --config or $BATPAK_CONFIG and a warning in a file found by looking
// around (a config.yaml in the current directory may belong to another
// tool). Sizes accept a byte count or a whole number of KiB, MiB or GiB;
// sync.interval is a Go duration (1s, 250ms, 0); compression is none, zstd
// or s2. The settings build a
// core.Config from core.DefaultConfig, checked by core.Config.Validate.
// "batpak config" prints each effective value and its source.
//
// # Compressed segments
//
// With compression set, a store opened for writing packs its sealed
// segments (never the one being written) in the background, one at a
// time, in blocks of about 64 KiB; a read decompresses one block. A write
// verb stops that work when it closes the store, so a short command may
// leave segments unpacked: "batpak seal" packs them, and writes any
// missing segment footers (which let the next open skip reading frames),
// before it returns. A store holds plain and packed segments side by side;
// every verb reads both, whatever compression is set to.
//
// # Write policies
//
// With policy.dir set, append and demo load that Open Policy Agent bundle
// (Rego v1, decision data.batpak.write; see package policy/opa) before opening
// the store, set it as the store's admission gate and write as the
// principal principal.id, principal.tenant and principal.roles (a
// comma-separated list; a YAML list in the file). A denied write writes
// nothing; the error names the gate, the policy revision and every reason
// with its context. "batpak policy test DIR" runs a bundle's Rego unit
// tests as "opa test --bundle" does (--json, --coverage, --threshold and
// --v0-compatible as opa test has them); "batpak policy eval" asks a
// bundle about one input document.
//
// # Against a server
//
// With remote.server set (--server URL, BATPAK_SERVER), append, get, query,
// ancestors, stats, verify, export and import work on a tenant of a
// running "batpak serve" through package sdk/client instead of a
// directory, printing what they print locally (in every -o FORMAT). The
// server's events carry no chain hash, so get prints none; stats shows
// the counts and sizes the server reports; an append without
// --idempotency-key carries one the client picks (bpc-…), so a retried
// request writes once; export's --entity-prefix and --scope are local
// only. The other store commands refuse while a server is set.
//
//	key            flag      environment
//	remote.server  --server  BATPAK_SERVER
//	remote.token   --token   BATPAK_TOKEN   (an API key or the operator credential; never printed)
//	remote.token_file  --token-file  BATPAK_TOKEN_FILE  (a file whose first line is the token; warned about when others may read it)
//	remote.tenant  --tenant  BATPAK_TENANT  (the tenant whose URL the key is used under)
//	remote.consistency  --consistency  BATPAK_CONSISTENCY  (local, or linearizable: a cluster's leader serves the reads)
//	remote.timeout      --timeout      BATPAK_TIMEOUT      (5m: the longest wait for a server that sends nothing, and for each MiB of a JSON answer; 0: for ever)
//	remote.ca_file      --ca-file      BATPAK_CA_FILE      (CA certificates, PEM, trusted with the system's roots: an https server whose certificate a private CA signed)
//
// The read commands (get, query, ancestors, descendants, correlation,
// stats) take --min-seq N against a cluster: the node asked serves them
// once it has applied the tenant's global sequence N (the seq= an append
// printed), so a read through any node sees that write. --consistency
// session (sdk/client's read-your-writes) is refused: each run is a
// session of its own; --min-seq is its CLI form.
//
// The administration commands need a server:
//
//	batpak tenant create ID | list | suspend ID [--reason R] | resume ID | delete ID --yes
//	       | quotas ID [--set NAME=VALUE]... [--unset NAME]...   [-o FORMAT]
//	batpak key issue NAME --role R | list | revoke KEY-ID   [-o FORMAT]
//	batpak worker start NAME [--plugin P] [--entity E] [--scope S] [--kind K] [--category C] [--cursor C]
//	                   [--max-restarts N] [--window D] [--backoff-min D] [--backoff-max D] [--replace]
//	              | stop NAME | reset NAME | delete NAME --yes | status [NAME]   [-o FORMAT]
//
// tenant takes the operator credential; key the operator credential or an
// admin key of --tenant; worker a key of --tenant (admin to start, stop,
// reset and delete a hosted worker, any role for its status, faults and
// log). worker start on an existing worker changes only the flags given
// (an empty --entity, --scope, --kind or --category clears that filter; --replace makes the flags the whole configuration); a new one
// needs --plugin. key issue prints the key once (the server keeps only its
// digest). tenant delete and worker delete refuse without --yes. A refusal from
// the server is one line, "batpak: server: CODE: detail (HTTP status)",
// with the exit code of its kind. What a server sends is bounded: one
// JSON answer, or one message of an event stream, of more than 256 MiB is
// refused with an error naming the limit (an export's NDJSON streams to
// its destination unbounded).
//
// Nothing printed on stdout can drive the terminal: control characters
// in stored or server-sent text (entity names, scopes, tenant names,
// reasons) print as Go escapes (\x1b, \r, \u009b); JSON and YAML, which
// carry them escaped already, read the same.
//
// # Errors and exit codes
//
// Errors go to stderr as one line starting with "batpak: " that names the
// flag or argument at fault (a policy denial adds one line per reason, a
// Rego parse or compile failure one per error, OPA's source excerpt
// under it on lines of its own); when the command itself was
// misused (unknown verb or flag, missing required flag, wrong arguments)
// one more line points to its --help, and a damaged segment adds one line
// naming the rescue (export --salvage, then import into a new store). The
// exit code says what kind of
// failure it was, the same locally and against a server (exitcode.go;
// README.md has the table): 0 success, 1 any other error, 2 usage, 3
// denied (a policy, or the server's authorization), 4 conflict
// (compare-and-set, idempotency key), 5 not found, 6 locked, 7 corrupt, 8
// unavailable (server unreachable, 503, retry later), 130 interrupted
// (SIGINT or SIGTERM cancel the command's context; a second signal kills
// the process).
package main
