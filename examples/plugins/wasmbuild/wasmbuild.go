package wasmbuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Flags are the go build flags used for every plugin.
var Flags = []string{"-buildmode=c-shared", "-trimpath"}

// CacheDir is where built modules are kept.
func CacheDir() string { return filepath.Join(os.TempDir(), "batpak-wasm-cache") }

var (
	mu   sync.Mutex
	done = map[string]string{} // absolute package dir → built file, this process
)

// Build builds the Go plugin whose main package is in dir and returns the
// path of the .wasm file (in CacheDir; do not modify it) and whether it
// came from the cache.
func Build(ctx context.Context, dir string) (path string, cached bool, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	mu.Lock()
	defer mu.Unlock()
	if p, ok := done[abs]; ok {
		return p, true, nil
	}
	key, err := sourceKey(ctx, abs)
	if err != nil {
		return "", false, err
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", false, err
	}
	path = filepath.Join(cache, filepath.Base(abs)+"-"+key[:24]+".wasm")
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		done[abs] = path
		return path, true, nil
	}
	tmp, err := os.CreateTemp(cache, ".build-*.wasm")
	if err != nil {
		return "", false, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	args := append([]string{"build"}, Flags...)
	args = append(args, "-o", tmp.Name(), ".")
	if _, err := goCmd(ctx, abs, args...); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", false, err
	}
	done[abs] = path
	return path, false, nil
}

// ForTest builds the plugin in dir (relative to the test's working
// directory, usually its package directory) and returns the module's
// bytes. It skips the test if the go command is not available.
func ForTest(tb testing.TB, dir string) []byte {
	tb.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		tb.Skip("the go command is not on PATH: cannot build wasm plugins")
	}
	path, _, err := Build(context.Background(), dir)
	if err != nil {
		tb.Fatalf("building plugin %s: %v", dir, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// sourceKey hashes what the build of the package in dir depends on.
func sourceKey(ctx context.Context, dir string) (string, error) {
	h := sha256.New()
	ver, err := goCmd(ctx, dir, "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "%s\n%q\n", bytes.TrimSpace(ver), Flags)
	out, err := goCmd(ctx, dir, "list", "-deps",
		"-f", `{{if not .Standard}}{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{range .EmbedFiles}}|{{.}}{{end}}{{end}}`, ".")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if parts[0] == "" {
			continue
		}
		for _, f := range parts[1:] {
			p := filepath.Join(parts[0], f)
			fmt.Fprintf(h, "%s\n", p)
			fh, err := os.Open(p)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// goCmd runs the go command in dir for GOOS=wasip1 GOARCH=wasm.
func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}
