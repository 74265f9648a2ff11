package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// TestTokenFile: --token-file (BATPAK_TOKEN_FILE, remote.token_file)
// reads the token from a file's first line, so that it is in neither the
// process list nor the environment; a file others may read is used with
// a warning, as is a config file holding remote.token; a token given both
// ways, an empty or oversized file and a directory are refused, naming
// the file and never its contents.
func TestTokenFile(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	ok(t, "--server", url, "--token", op, "tenant", "create", "acme")
	key := keyIn(t, ok(t, "--server", url, "--token", op, "--tenant", "acme", "key", "issue", "app", "--role", "writer"))

	private := filepath.Join(dir, "key")
	if err := os.WriteFile(private, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := batpak(t, "--server", url, "--token-file", private, "--tenant", "acme", "append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "appended ") || r.stderr != "" {
		t.Fatalf("append with --token-file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	t.Setenv("BATPAK_TOKEN_FILE", private)
	if out := ok(t, "--server", url, "--tenant", "acme", "query"); !strings.Contains(out, "1 event; region:") {
		t.Fatalf("query with BATPAK_TOKEN_FILE: %q", out)
	}
	t.Setenv("BATPAK_TOKEN_FILE", "")

	if runtime.GOOS != "windows" {
		shared := filepath.Join(dir, "shared-key")
		if err := os.WriteFile(shared, []byte(key), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, 0o644); err != nil {
			t.Fatal(err)
		}
		r := batpak(t, "--server", url, "--token-file", shared, "--tenant", "acme", "query")
		if r.code != 0 || !strings.Contains(r.stderr, shared+" holds a credential and other users may read it (mode 0644); chmod 600") {
			t.Fatalf("--token-file readable by others: exit %d, stderr %q", r.code, r.stderr)
		}
		cfg := filepath.Join(dir, "remote.yaml")
		writeFile(t, cfg, "remote:\n  server: "+url+"\n  token: "+key+"\n  tenant: acme\n")
		for _, mode := range []os.FileMode{0o644, 0o600} {
			if err := os.Chmod(cfg, mode); err != nil {
				t.Fatal(err)
			}
			r := batpak(t, "--config", cfg, "query")
			warned := strings.Contains(r.stderr, cfg+" holds remote.token and other users may read it")
			if r.code != 0 || warned != (mode == 0o644) {
				t.Fatalf("config file of mode %04o holding remote.token: exit %d, stderr %q", mode, r.code, r.stderr)
			}
		}
	}

	failsWith(t, exitUsage, []string{"--server", url, "--token", key, "--token-file", private, "--tenant", "acme", "query"},
		"both a token (flag --token) and a token file (flag --token-file) are given: give one")
	// Given in different layers, the higher wins: a flag over the
	// environment over the config file.
	t.Setenv("BATPAK_TOKEN", "bpk_not_this_one")
	if out := ok(t, "--server", url, "--token-file", private, "--tenant", "acme", "query"); !strings.Contains(out, "1 event; region:") {
		t.Fatalf("--token-file over BATPAK_TOKEN: %q", out)
	}
	t.Setenv("BATPAK_TOKEN", "")
	layered := filepath.Join(dir, "layered.yaml")
	writeFile(t, layered, "remote:\n  token: bpk_not_this_one\n")
	if err := os.Chmod(layered, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BATPAK_TOKEN_FILE", private)
	if out := ok(t, "--config", layered, "--server", url, "--tenant", "acme", "query"); !strings.Contains(out, "1 event; region:") {
		t.Fatalf("BATPAK_TOKEN_FILE over remote.token: %q", out)
	}
	// A local command reads no token file, whatever names one.
	t.Setenv("BATPAK_TOKEN_FILE", filepath.Join(dir, "missing"))
	if r := batpak(t, "--data-dir", filepath.Join(dir, "local"), "append", "--entity", "e:1", "--scope", "s", "--kind", "1:1", "--data", "{}"); r.code != 0 || r.stderr != "" {
		t.Fatalf("a local append with BATPAK_TOKEN_FILE set: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Setenv("BATPAK_TOKEN_FILE", "")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n  \nsecond line"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(key+strings.Repeat("x", maxSecretFileBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		empty:                         empty + ": the first line is empty",
		big:                           "a credential file holds one line, at most 65536 bytes",
		dir:                           dir + " is a directory",
		filepath.Join(dir, "missing"): "no such file",
	} {
		r := batpak(t, "--server", url, "--token-file", path, "--tenant", "acme", "query")
		if r.code == 0 || !strings.Contains(r.stderr, "--token-file") || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, key) {
			t.Errorf("--token-file %s: exit %d, stderr %q, want one naming %q", path, r.code, r.stderr, want)
		}
	}
}

// server.operator_token_file: the operator credential read from a file;
// refused together with server.operator_token, or when the file is empty.
func TestServeOperatorTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "op")
	if err := os.WriteFile(path, []byte("bpko_from_a_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := func(kv map[string]string) *app {
		a := &app{v: viper.New()}
		bindServerSettings(pflag.NewFlagSet("serve", pflag.ContinueOnError), a.v)
		for k, v := range kv {
			a.v.Set(k, v)
		}
		return a
	}
	a := settings(map[string]string{"server.operator_token_file": path})
	cfg, err := a.serverConfig("")
	if err != nil || cfg.OperatorToken != "bpko_from_a_file" {
		t.Fatalf("operator_token_file: token %q, err %v", cfg.OperatorToken, err)
	}
	a = settings(map[string]string{"server.operator_token_file": path, "server.operator_token": "bpko_other"})
	if _, err := a.serverConfig(""); err == nil || !strings.Contains(err.Error(), "both the operator credential (default) and server.operator_token_file (default) are set: give one") {
		t.Fatalf("both set: %v", err)
	}
	// BATPAK_OPERATOR_TOKEN (the environment) wins over a file named by
	// the configuration.
	t.Setenv(operatorTokenEnv, "bpko_from_the_environment")
	a = settings(map[string]string{"server.operator_token_file": path})
	if cfg, err := a.serverConfig(""); err != nil || cfg.OperatorToken != "bpko_from_the_environment" {
		t.Fatalf("environment over operator_token_file: %q, %v", cfg.OperatorToken, err)
	}
	t.Setenv(operatorTokenEnv, "")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a = settings(map[string]string{"server.operator_token_file": path})
	if _, err := a.serverConfig(""); err == nil || !strings.Contains(err.Error(), "server.operator_token_file (default): "+path+": the first line is empty") {
		t.Fatalf("empty file: %v", err)
	}
}
