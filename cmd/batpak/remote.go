package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/certroots"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/sdk/client"
)

// Remote settings: with remote.server set, the data commands talk to a
// running "batpak serve" through sdk/client instead of opening a local
// directory. Each is a config-file key, a flag and an environment
// variable: remote.server (--server, BATPAK_SERVER; a URL holding
// credentials is refused, and plain http to a host that is not loopback
// is warned about on stderr), remote.token
// (--token, BATPAK_TOKEN; an API key or the operator credential, never
// printed), remote.token_file (--token-file, BATPAK_TOKEN_FILE; the
// token read from a file instead, see readSecretFile), remote.tenant (--tenant, BATPAK_TENANT; the tenant whose
// URL a tenant API key is used under), remote.consistency
// (--consistency, BATPAK_CONSISTENCY; local or linearizable: how a
// cluster serves the reads, see sdk/client.Options.Consistency) and
// remote.timeout (--timeout, BATPAK_TIMEOUT; how long the CLI waits for a
// server that sends nothing, see defaultServerIdle) and remote.ca_file
// (--ca-file, BATPAK_CA_FILE; CA certificates, PEM, trusted with the
// system's roots for an https server whose certificate a private CA
// signed). The
// client's "session" consistency (read-your-writes) is not offered: it
// remembers a process's own writes, and each CLI run is a process of its
// own; the read commands take --min-seq instead (registerMinSeqFlag).
var remoteKeys = []struct{ key, flag, env string }{
	{"remote.server", "server", "BATPAK_SERVER"},
	{"remote.token", "token", "BATPAK_TOKEN"},
	{"remote.token_file", "token-file", "BATPAK_TOKEN_FILE"},
	{"remote.tenant", "tenant", "BATPAK_TENANT"},
	{"remote.consistency", "consistency", "BATPAK_CONSISTENCY"},
	{"remote.timeout", "timeout", "BATPAK_TIMEOUT"},
	{"remote.ca_file", "ca-file", "BATPAK_CA_FILE"},
}

// registerRemoteFlags adds --server and --token and binds the remote.*
// keys to their flags and environment variables. --tenant is the
// principal's tenant flag, which also names the tenant on a server.
// cliRetryFor is how long the CLI keeps sending a read or an idempotent
// write again while the server cannot be had (client.Options.RetryFor).
const cliRetryFor = 3 * time.Second

func registerRemoteFlags(fs *pflag.FlagSet, v *viper.Viper) {
	fs.String("server", "", "URL of a running batpak serve (http(s)://host:port); the data, tenant and key commands then work against it; env BATPAK_SERVER")
	fs.String("token", "", "API key or operator credential for --server (never printed; visible to other users in the process list: prefer BATPAK_TOKEN or --token-file); env BATPAK_TOKEN")
	fs.String("token-file", "", "file holding the API key or operator credential for --server (its first line; at most 64 KiB; warned about when others may read it); env BATPAK_TOKEN_FILE")
	fs.String("consistency", "local", "with --server on a cluster: local (reads served by the node asked, from what it has applied) or linearizable (by the leader; every acknowledged write is seen); read one write of your own with --min-seq on the read command instead; env BATPAK_CONSISTENCY")
	fs.String("timeout", defaultServerIdle.String(), "with --server: the longest the CLI waits for a server that sends nothing (the answer's headers — once sent, verify, import and uploads wait for the server's work —, or the next bytes of an answer), or for each MiB of a JSON answer, then fails; an event stream is taken for dead after 45s without a heartbeat and followed again; 0 waits for ever; env BATPAK_TIMEOUT")
	fs.String("ca-file", "", "with an https --server: CA certificates (PEM) its certificate chains to, trusted together with the system's roots (a private CA); env BATPAK_CA_FILE")
	for _, k := range remoteKeys {
		if err := v.BindPFlag(k.key, fs.Lookup(k.flag)); err != nil {
			panic(err) // only if the flag was not registered
		}
		// The short name (documented) first; the name every other key's
		// variable follows (BATPAK_REMOTE_SERVER) works too.
		if err := v.BindEnv(k.key, k.env, envName(k.key)); err != nil {
			panic(err)
		}
	}
}

// remoteSource says which layer supplied a remote.* key's value.
func (a *app) remoteSource(key, flag, env string) string {
	if a.flagChanged(flag) {
		return "flag --" + flag
	}
	for _, name := range []string{env, envName(key)} {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return "env " + name
		}
	}
	if a.configFile != "" && a.v.InConfig(key) {
		return "config " + a.configFile
	}
	return "default"
}

// remoteConf is the resolved remote.* settings.
type remoteConf struct {
	server, token, tenant string
	c                     *client.Client
	opts                  client.Options // c's, for clients of other nodes (at)
	// minSeq, when hasMinSeq, is the read command's --min-seq: its reads
	// of the tenant wait for that sequence (see registerMinSeqFlag).
	minSeq    uint64
	hasMinSeq bool
}

// registerMinSeqFlag adds --min-seq to a read command: against a
// cluster, its reads of the tenant are served once the node asked has
// applied that global sequence (min_seq; at most
// server.cluster.read_wait, then NOT_CAUGHT_UP, exit 8), so a read
// through any node sees a write whose seq= append printed. A single
// server, and a local store, hold every write they acknowledged: there
// it changes nothing. A value that is not a whole number 0 or more is a
// usage error (exit 2).
func registerMinSeqFlag(cmd *cobra.Command, a *app) {
	cmd.Flags().Var(&minSeqValue{a: a}, "min-seq", "with --server on a cluster: read once the node has applied this global sequence (the seq= append printed: read-your-writes)")
}

// minSeqValue is --min-seq as given. Given at all, it must be a global
// sequence: an empty value (--min-seq "$SEQ" when the append that was to
// set SEQ failed) is refused rather than read as no --min-seq, which
// would silently drop the read-your-writes wait the caller asked for.
type minSeqValue struct{ a *app }

func (v *minSeqValue) String() string { return v.a.minSeq }
func (v *minSeqValue) Type() string   { return "string" }
func (v *minSeqValue) Set(s string) error {
	v.a.minSeq, v.a.minSeqSet = s, true
	return nil
}

// remote returns the server connection when remote.server is set, nil
// (local mode) when not.
func (a *app) remote() (*remoteConf, error) {
	if _, err := a.loadConfig(); err != nil {
		return nil, err
	}
	rc := &remoteConf{
		server: strings.TrimSpace(a.v.GetString("remote.server")),
		token:  a.v.GetString("remote.token"),
		tenant: a.v.GetString("remote.tenant"),
	}
	if a.minSeqSet {
		if strings.TrimSpace(a.minSeq) == "" {
			return nil, usagef("--min-seq is empty: want a global sequence, 0 or more (the seq= append printed; is the shell variable that should hold it set?)")
		}
		seq, err := strconv.ParseUint(strings.TrimSpace(a.minSeq), 10, 64)
		if err != nil {
			return nil, usagef("--min-seq %q: want a global sequence, 0 or more (the seq= append printed)", a.minSeq)
		}
		rc.minSeq, rc.hasMinSeq = seq, true
	}
	if rc.server == "" {
		return nil, nil
	}
	if err := a.remoteToken(rc); err != nil {
		return nil, err
	}
	a.noToken = rc.token == ""
	u, perr := url.Parse(rc.server)
	if perr != nil && strings.Contains(rc.server, "@") {
		// Not echoed: the part before "@" may be a password.
		return nil, badInput("--server", errors.New("not a URL, and it may hold credentials (user:password@); want http(s)://host:port and the token in --token or BATPAK_TOKEN"))
	}
	if perr == nil {
		if u.User != nil {
			return nil, badInput("--server", errors.New("the URL holds credentials (user:password@); give the token with --token or BATPAK_TOKEN"))
		}
		if p := strings.TrimRight(u.Path, "/"); p == "/v1" || strings.HasSuffix(p, "/v1") {
			return nil, badInput("--server", fmt.Errorf("%s ends in /v1: name the server's base URL (%s), the CLI adds the API's paths", printable.String(rc.server), printable.String(u.Scheme+"://"+u.Host+strings.TrimSuffix(p, "/v1"))))
		}
		if u.Scheme == "http" && rc.token != "" && !loopbackHost(u.Hostname()) {
			fmt.Fprintf(a.stderr, "batpak: warning: --server %s is plain http to a host that is not loopback: the token travels unencrypted; use https://\n", rc.server)
		}
	}
	consistency := strings.TrimSpace(a.v.GetString("remote.consistency"))
	if consistency == "session" {
		return nil, usagef("--consistency %q: want local or linearizable (each batpak run is a session of its own: to read your write, pass its seq= to --min-seq)", consistency)
	}
	if consistency != "" && consistency != "local" && consistency != "linearizable" {
		return nil, usagef("--consistency %q: want local or linearizable", consistency)
	}
	idle := defaultServerIdle
	if t := strings.TrimSpace(a.v.GetString("remote.timeout")); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 {
			return nil, usagef("--timeout %q: want a duration such as 30s or 5m (0: wait for ever)", t)
		}
		idle = d
	}
	// Redirects are not followed by net/http: the client follows a
	// cluster follower's NOT_LEADER redirect itself, and nothing else (no
	// other host, port or scheme gets the token).
	var roots *x509.CertPool
	if f := strings.TrimSpace(a.v.GetString("remote.ca_file")); f != "" {
		p, err := expandHome(f)
		if err == nil {
			roots, err = certroots.Load(p)
		}
		if err != nil {
			return nil, badInput("CA file ("+a.remoteSource("remote.ca_file", "ca-file", "BATPAK_CA_FILE")+")", err)
		}
	}
	hc := &http.Client{Transport: newBoundedTransport(roots), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var reconnect time.Duration
	if idle == 0 {
		idle, reconnect = -1, -1 // wait for ever; --follow reconnects for ever
	}
	// A server that cannot be had, or a cluster between leaders, is waited
	// for cliRetryFor (an election takes about 2 s), not the library's 10 s:
	// a command is answered "unavailable" sooner.
	rc.opts = client.Options{HTTPClient: hc, Consistency: consistency, MaxResponseBytes: maxServerMessageBytes, IdleTimeout: idle, ReconnectFor: reconnect, RetryFor: cliRetryFor}
	c, err := client.New(rc.server, rc.token, rc.opts)
	if err != nil {
		return nil, badInput("--server", errors.New(strings.TrimPrefix(err.Error(), "client: ")))
	}
	rc.c = c
	return rc, nil
}

// remoteToken settles rc.token between remote.token and
// remote.token_file: the one from the higher layer (flag, then
// environment, then config file) wins, and both in one layer are a usage
// error. A token file is read with readSecretFile; a config file that
// holds the token is warned about when others may read it.
func (a *app) remoteToken(rc *remoteConf) error {
	tokSrc := a.remoteSource("remote.token", "token", "BATPAK_TOKEN")
	fileSrc := a.remoteSource("remote.token_file", "token-file", "BATPAK_TOKEN_FILE")
	path := strings.TrimSpace(a.v.GetString("remote.token_file"))
	switch {
	case path != "" && rc.token != "" && layerRank(tokSrc) == layerRank(fileSrc):
		return usagef("both a token (%s) and a token file (%s) are given: give one", tokSrc, fileSrc)
	case path != "" && (rc.token == "" || layerRank(fileSrc) > layerRank(tokSrc)):
		p, err := expandHome(path)
		if err == nil {
			rc.token, err = readSecretFile(p, a.stderr)
		}
		if err != nil {
			return badInput("token file ("+fileSrc+")", err)
		}
	case rc.token != "" && tokSrc == "config "+a.configFile:
		warnIfOthersRead(a.configFile, "holds remote.token", a.stderr)
	}
	return nil
}

// layerRank orders the sources a setting comes from (see sourceOf and
// remoteSource): a flag over the environment over the config file over
// the default.
func layerRank(source string) int {
	switch {
	case strings.HasPrefix(source, "flag "):
		return 3
	case strings.HasPrefix(source, "env "):
		return 2
	case strings.HasPrefix(source, "config "):
		return 1
	}
	return 0
}

// loopbackHost says whether host is "localhost" or a loopback address,
// where plain http does not expose the token to the network.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redactedURL is s with the password of its user info hidden (config
// show), s itself when it does not parse.
func redactedURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// tenantClient is the tenant the command works on: --tenant,
// BATPAK_TENANT or remote.tenant must name it.
func (rc *remoteConf) tenantClient() (*client.Tenant, error) {
	if rc.tenant == "" {
		return nil, usagef("against a server, --tenant (BATPAK_TENANT, remote.tenant) names the tenant")
	}
	if rc.hasMinSeq {
		return rc.c.Tenant(rc.tenant).WithMinSequence(rc.minSeq), nil
	}
	return rc.c.Tenant(rc.tenant), nil
}

// where names the store a remote command works on, for messages.
func (rc *remoteConf) where() string { return rc.server + " tenant " + rc.tenant }

// needServer is the error of a command that works only against a server.
func (a *app) needServer(cmd string) (*remoteConf, error) {
	rc, err := a.remote()
	if err != nil {
		return nil, err
	}
	if rc == nil {
		return nil, usagef("%s works against a server: give --server URL and --token (BATPAK_SERVER, BATPAK_TOKEN)", cmd)
	}
	return rc, nil
}

// localOnly refuses to open the local store while a server is
// configured: a command that has no remote form must not quietly work on
// --data-dir when the user meant the server.
func (a *app) localOnly() error {
	if strings.TrimSpace(a.v.GetString("remote.server")) == "" {
		return nil
	}
	return errors.New("this command works on a local store only, and a server is set (--server, BATPAK_SERVER or remote.server); unset it to work on --data-dir")
}

// remoteError renders a server's problem as one line: its code and
// detail (and HTTP status). The token is never part of it.
func remoteError(err error) error {
	var ou *client.OutcomeUnknownError
	if errors.As(err, &ou) {
		// The write went out and its answer was lost: say which key writes
		// it once if sent again.
		msg := remoteError(ou.Err).Error()
		if len(ou.IdempotencyKeys) == 1 {
			msg += fmt.Sprintf("; the write may have been written: send it again with --idempotency-key %s to write it once", printable.String(ou.IdempotencyKeys[0]))
		} else {
			msg += "; the write may have been written"
		}
		return withExitCode(exitUnavailable, &detailError{msg: msg, err: err})
	}
	var e *client.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) {
			return err
		}
		var idle *client.IdleError
		if errors.As(err, &idle) {
			return &detailError{msg: "server: " + idle.Reason() + " (--timeout, BATPAK_TIMEOUT)", err: err}
		}
		var ue *url.Error
		if errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &ue) {
			where := ue.URL
			if u, perr := url.Parse(ue.URL); perr == nil {
				where = u.Scheme + "://" + u.Host
			}
			return &detailError{msg: fmt.Sprintf("server: nothing listens at %s (connection refused): start batpak serve there, or point --server (BATPAK_SERVER) at a running one", printable.String(where)), err: err}
		}
		if errors.As(err, &ue) && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			where := ue.URL
			if u, perr := url.Parse(ue.URL); perr == nil {
				where = u.Host
			}
			return withExitCode(exitError, &detailError{msg: fmt.Sprintf("server: %s answers plain HTTP, not HTTPS: use http:// in --server (BATPAK_SERVER), or serve TLS (server.tls_cert, server.tls_key)", printable.String(where)), err: err})
		}
		msg := "server: " + strings.TrimPrefix(err.Error(), "client: ")
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			msg += " (if a private CA signed the server's certificate, give the CA's certificate with --ca-file, BATPAK_CA_FILE or remote.ca_file)"
		}
		return &detailError{msg: msg, err: err}
	}
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	code := e.Code
	if code == "" {
		code = fmt.Sprintf("HTTP %d", e.Status)
	}
	if rs := e.Reasons(); e.Code == client.CodePolicyDenied && len(rs) > 1 {
		return remoteDenial(e, rs, err)
	}
	return &detailError{msg: fmt.Sprintf("server: %s: %s (HTTP %d)%s", code, msg, e.Status, retryHint(e.RetryAfter)), err: err}
}

// importError is remoteError for an import that failed part way: the
// refusal as remoteError prints it (its exit code kept), then which lines
// of the file the refused request carried, how many events were imported
// before it, and that running the import again resumes.
func importError(err error) error {
	var ie *client.ImportError
	if !errors.As(err, &ie) {
		return remoteError(err)
	}
	inner := remoteError(ie.Err)
	where := ""
	if lines, one := ie.Lines(); one {
		where = " (" + lines + " of the file)"
	} else if lines != "" {
		where = " (the request carrying " + lines + " of the file)"
	}
	return &detailError{msg: inner.Error() + where + "; " + ie.Resume(), err: inner}
}

// retryHint says when the server asked to be tried again (its
// Retry-After), so a refusal that exits 8 ("try again later") says how
// much later: a tenant past its control_changes_per_day waits hours, not
// seconds. "" when the server named no time.
func retryHint(after time.Duration) string {
	if after <= 0 {
		return ""
	}
	return "; the server asks to retry in " + after.Round(time.Second).String()
}

// remoteDenial renders a server's policy denial with several reasons as
// a local one is rendered: a line naming the layer and revision, then
// every reason on a line of its own (the problem's detail is only the
// first).
func remoteDenial(e *client.Error, rs []client.DenialReason, err error) error {
	var b strings.Builder
	b.WriteString("server: POLICY_DENIED: denied")
	if l := e.Layer(); l != "" {
		fmt.Fprintf(&b, " by the %s policy", printable.String(l))
	}
	if r := e.Revision(); r != "" {
		fmt.Fprintf(&b, " (revision %s)", printable.String(r))
	}
	fmt.Fprintf(&b, " (HTTP %d); nothing was written; %d reasons:", e.Status, len(rs))
	for _, r := range rs {
		// A policy's reasons can quote payload text: escaped, so each
		// stays one line.
		fmt.Fprintf(&b, "\n  %s: %s", printable.String(r.Code), printable.String(r.Message))
	}
	return &linesError{detailError{msg: b.String(), err: err}}
}

// fromWire turns a server's event into the store's form, so the local
// printers show it. The chain hashes are not on the wire: they stay zero.
func fromWire(ev client.Event) (core.StoredEvent, error) {
	id, err := core.ParseEventID(ev.ID)
	if err != nil {
		return core.StoredEvent{}, fmt.Errorf("server sent event id %q: %w", ev.ID, err)
	}
	kind, err := parseShownKind(ev.Kind)
	if err != nil {
		return core.StoredEvent{}, fmt.Errorf("server sent kind %q: %w", ev.Kind, err)
	}
	out := core.StoredEvent{
		Coordinate:     core.Coordinate{Entity: ev.Entity, Scope: ev.Scope},
		GlobalSequence: ev.GlobalSequence,
		Payload:        ev.Payload,
		Redacted:       ev.Redacted,
		Header: core.Header{
			ID: id, Kind: kind, Clock: ev.Clock, Flags: ev.Flags, Timestamp: ev.TimestampUS,
		},
	}
	if ev.Redacted {
		out.Payload = nil
	}
	if ev.IdempotencyKey != nil {
		out.IdempotencyKey = *ev.IdempotencyKey
	}
	if out.Header.CorrelationID, err = core.ParseEventID(ev.CorrelationID); err != nil {
		return core.StoredEvent{}, fmt.Errorf("server sent correlation id %q: %w", ev.CorrelationID, err)
	}
	if ev.CausationID != nil && *ev.CausationID != "" {
		if out.Header.CausationID, err = core.ParseEventID(*ev.CausationID); err != nil {
			return core.StoredEvent{}, fmt.Errorf("server sent causation id %q: %w", *ev.CausationID, err)
		}
	}
	return out, nil
}

// jsonInt reads a JSON number of a server's answer.
func jsonInt(m map[string]any, key string) int64 {
	switch v := m[key].(type) {
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}
