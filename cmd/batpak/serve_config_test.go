package main

import (
	"context"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// server.rate_refusal_delay: default 100ms; a duration as given; 0 in the
// config turns the hold off (a negative server.Config value, since 0 there
// means the default).
func TestServeRateRefusalDelaySetting(t *testing.T) {
	for _, tc := range []struct {
		raw  any
		want time.Duration
	}{{nil, 100 * time.Millisecond}, {"250ms", 250 * time.Millisecond}, {"1s", time.Second}, {"0", -1}, {0, -1}} {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		if tc.raw != nil {
			a.v.Set("server.rate_refusal_delay", tc.raw)
		}
		cfg, err := a.serverConfig("")
		if err != nil {
			t.Fatalf("%v: %v", tc.raw, err)
		}
		if cfg.RateRefusalDelay != tc.want {
			t.Fatalf("server.rate_refusal_delay %v: got %v, want %v", tc.raw, cfg.RateRefusalDelay, tc.want)
		}
	}
}

// server.max_connections_per_source: default 256; a count as given; 0 in
// the config turns the bound off (negative in server.Config); a negative
// or too large value is refused naming the setting.
func TestServeMaxConnectionsPerSourceSetting(t *testing.T) {
	for _, tc := range []struct {
		raw  any
		want int
		err  string
	}{{nil, 256, ""}, {"1", 1, ""}, {1000000, 1000000, ""}, {"0", -1, ""}, {0, -1, ""},
		{"-3", 0, "server.max_connections_per_source: -3 is negative"}, {"1000001", 0, "server.max_connections_per_source = 1000001: want 1..1000000"}, {"many", 0, "server.max_connections_per_source"}} {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		if tc.raw != nil {
			a.v.Set("server.max_connections_per_source", tc.raw)
		}
		cfg, err := a.serverConfig("")
		if err == nil && tc.err != "" {
			_, err = server.New(context.Background(), withRoot(cfg, t.TempDir()))
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("server.max_connections_per_source %v: error %v, want one containing %q", tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.raw, err)
		}
		if cfg.MaxConnectionsPerSource != tc.want {
			t.Fatalf("server.max_connections_per_source %v: got %v, want %v", tc.raw, cfg.MaxConnectionsPerSource, tc.want)
		}
	}
}

// withRoot is cfg with its root in dir and its messages dropped.
func withRoot(cfg server.Config, dir string) server.Config {
	cfg.Root, cfg.Stderr, cfg.Logger = dir, io.Discard, nil
	return cfg
}

// TestOperatorTokenEnvironment: BATPAK_OPERATOR_TOKEN, the documented
// variable, overrides the config file's server.operator_token as every
// BATPAK_* variable overrides the file, and `batpak config` names it as
// the source.
func TestOperatorTokenEnvironment(t *testing.T) {
	dir := isolate(t)
	writeFile(t, dir+"/batpak.yaml", "server:\n  operator_token: bpko_fromthefile\n")
	t.Setenv("BATPAK_OPERATOR_TOKEN", "bpko_fromtheenvironment")
	out := ok(t, "config")
	if re := regexp.MustCompile(`server\.operator_token\s+\(set, not shown\)\s+env BATPAK_OPERATOR_TOKEN\s+BATPAK_OPERATOR_TOKEN`); !re.MatchString(out) {
		t.Errorf("batpak config does not name BATPAK_OPERATOR_TOKEN as the source:\n%s", out)
	}
	if strings.Contains(out, "fromthe") {
		t.Error("batpak config printed the operator credential")
	}
	for _, tc := range []struct{ env, value, want string }{
		{"BATPAK_OPERATOR_TOKEN", "bpko_fromtheenvironment", "bpko_fromtheenvironment"},
		{"BATPAK_SERVER_OPERATOR_TOKEN", "bpko_fromthegenericname", "bpko_fromthegenericname"},
		{"", "", "bpko_fromthefile"},
	} {
		t.Setenv("BATPAK_OPERATOR_TOKEN", "")
		if tc.env != "" {
			t.Setenv(tc.env, tc.value)
		}
		a := &app{v: viper.New()}
		a.v.SetConfigFile(dir + "/batpak.yaml")
		if err := a.v.ReadInConfig(); err != nil {
			t.Fatal(err)
		}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		cfg, err := a.serverConfig("")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OperatorToken != tc.want {
			t.Errorf("%s set, file bpko_fromthefile: operator credential %q, want %q", tc.env, cfg.OperatorToken, tc.want)
		}
		if tc.env != "" {
			t.Setenv(tc.env, "")
		}
	}
}

// server.anonymous_requests_per_second: default 1000; a count as given;
// 0 in the config turns the bound off (negative in server.Config); a
// negative or too large value is refused naming the setting. The burst
// left at 0 is twice the rate.
func TestServeAnonymousRequestsSetting(t *testing.T) {
	for _, tc := range []struct {
		raw, burst any
		want       int
		err        string
	}{{nil, nil, 1000, ""}, {"5", nil, 5, ""}, {"0", nil, -1, ""}, {5, 7, 5, ""},
		{"-3", nil, 0, "server.anonymous_requests_per_second: -3 is negative"},
		{"1000001", nil, 0, "server.anonymous_requests_per_second = 1000001: want 1..1000000"},
		{nil, "1000001", 0, "server.anonymous_requests_burst = 1000001: want 1..1000000"}} {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		if tc.raw != nil {
			a.v.Set("server.anonymous_requests_per_second", tc.raw)
		}
		if tc.burst != nil {
			a.v.Set("server.anonymous_requests_burst", tc.burst)
		}
		cfg, err := a.serverConfig("")
		if err == nil && tc.err != "" {
			_, err = server.New(context.Background(), withRoot(cfg, t.TempDir()))
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("%v/%v: error %v, want one containing %q", tc.raw, tc.burst, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v/%v: %v", tc.raw, tc.burst, err)
		}
		if cfg.AnonymousRequestsPerSecond != tc.want {
			t.Fatalf("server.anonymous_requests_per_second %v: got %v, want %v", tc.raw, cfg.AnonymousRequestsPerSecond, tc.want)
		}
		if tc.burst != nil && cfg.AnonymousRequestsBurst != 7 {
			t.Fatalf("server.anonymous_requests_burst %v: got %v", tc.burst, cfg.AnonymousRequestsBurst)
		}
	}
}

// TestServeTrustedProxiesSetting: server.trusted_proxies is a YAML list
// in the file and comma-separated in a flag or the environment; an entry
// that is not an address or a network is refused naming it.
func TestServeTrustedProxiesSetting(t *testing.T) {
	for _, tc := range []struct {
		raw  any
		want []string
		err  string
	}{{nil, nil, ""}, {"", nil, ""},
		{"10.0.0.0/8, 192.0.2.7", []string{"10.0.0.0/8", "192.0.2.7"}, ""},
		{[]any{"10.0.0.0/8", "2001:db8::/32"}, []string{"10.0.0.0/8", "2001:db8::/32"}, ""},
		{"10.0.0.0/8,lb.internal", nil, `server.trusted_proxies: trusted proxy "lb.internal": not an address or a network`},
		{map[string]any{"a": 1}, nil, "server.trusted_proxies"}} {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		if tc.raw != nil {
			a.v.Set("server.trusted_proxies", tc.raw)
		}
		cfg, err := a.serverConfig("")
		if err == nil {
			var srv *server.Server
			if srv, err = server.New(context.Background(), withRoot(cfg, t.TempDir())); err == nil {
				_ = srv.Shutdown(context.Background())
			}
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("%v: error %v, want one containing %q", tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.raw, err)
		}
		if !slices.Equal(cfg.TrustedProxies, tc.want) {
			t.Fatalf("server.trusted_proxies %v: got %q, want %q", tc.raw, cfg.TrustedProxies, tc.want)
		}
	}
}
