package httpapi

import (
	"errors"
	"net/http"
	"testing"

	"github.com/batpak-go/batpak/server/tenantplugin"
	"github.com/batpak-go/batpak/server/wire"
)

// TestPluginStillLoadingIsBusy: a plugin the server has not loaded yet
// since it started is answered 503 BUSY with Retry-After (it will serve
// shortly), not 424 like a version that cannot load.
func TestPluginStillLoadingIsBusy(t *testing.T) {
	e := pluginProblem(&tenantplugin.NotLoadedError{Plugin: "totals", Cause: tenantplugin.ErrLoading})
	if e == nil || e.status != http.StatusServiceUnavailable || e.code != wire.CodeBusy || e.retryAfter <= 0 {
		t.Fatalf("a plugin still loading: %+v; want 503 BUSY with Retry-After", e)
	}
	e = pluginProblem(&tenantplugin.NotLoadedError{Plugin: "totals", Cause: errors.New("its stored module is missing")})
	if e == nil || e.status != http.StatusFailedDependency {
		t.Fatalf("a plugin that cannot load: %+v; want 424", e)
	}
}
