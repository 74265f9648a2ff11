package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireToolsEnv is the variable that turns skips for missing tools into
// failures when set to "1".
const RequireToolsEnv = "BATPAK_REQUIRE_TOOLS"

// Required reports whether missing tools fail tests (BATPAK_REQUIRE_TOOLS=1).
func Required() bool { return os.Getenv(RequireToolsEnv) == "1" }

// Skipf skips the test with the message, or fails it when Required.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1: a missing tool fails the test)", msg, RequireToolsEnv)
	}
	t.Skip(msg)
}

// NeedTool returns the path of the executable name, looked up in PATH. When
// it is not found the test skips, or fails when Required; install names
// what provides it (e.g. "apt-get install wabt").
func NeedTool(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Skipf(t, "%s not found (%s)", name, install)
	}
	return path
}
