package server_test

import (
	"os"
	"testing"

	"github.com/batpak-go/batpak/server/plugincompiler"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// TestMain lets this test binary serve as the servers' plugin compiler
// child (server/plugincompiler), as cmd/batpak does.
func TestMain(m *testing.M) {
	plugincompiler.RunChild()
	tenantpolicy.RunChild()
	os.Exit(m.Run())
}
