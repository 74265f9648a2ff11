package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/hostedworker"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// registrySource gives hosted workers the tenants' uploaded plugins: the
// active version of the tenant's plugin of that name. The *plugins.Plugin
// it returns is the same object across swaps, so a running worker calls
// the version swapped in from its next batch on.
type registrySource struct{ m *tenantplugin.Manager }

// Handler implements hostedworker.PluginSource. An unknown plugin wraps
// hostedworker.ErrPluginNotFound; a kept plugin whose active version did
// not load is the *tenantplugin.NotLoadedError. A plugin the server is
// still loading since it started is waited for (a worker started with
// the server does not fault for it).
func (r registrySource) Handler(ctx context.Context, tenant, name string) (*plugins.Plugin, error) {
	if err := r.m.WaitLoaded(ctx, tenant, name); err != nil {
		return nil, err
	}
	p, _, err := r.m.Plugin(ctx, tenant, name)
	if errors.Is(err, control.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", hostedworker.ErrPluginNotFound, name)
	}
	return p, err
}
