package httpapi

import (
	"net/http"

	"github.com/batpak-go/batpak/server/hostedworker"
	"github.com/batpak-go/batpak/server/wire"
)

// Hosted workers: a tenant's handler plugins run by the server
// (server/hostedworker). A worker's status, faults and log are answered
// only under its own tenant's routes.

// workers is the supervisor, or the 501 of a server without one.
func (a *API) workers() (*hostedworker.Supervisor, error) {
	if a.opts.Workers == nil {
		return nil, &apiError{status: http.StatusNotImplemented, code: wire.CodeNotImplemented,
			detail: "this server runs no hosted workers: it was started without a plugin source"}
	}
	return a.opts.Workers, nil
}

// workersChanged brings a tenant's workers in line with its state after
// a suspension, resumption or deletion.
func (a *API) workersChanged(tenant string) {
	if a.opts.Workers != nil {
		a.opts.Workers.TenantChanged(tenant)
	}
}

func (a *API) listWorkers(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	out, err := sup.Workers(c.r.Context(), c.tenant)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"workers": out})
}

func (a *API) startWorker(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	var req hostedworker.StartRequest
	if err := a.decode(c, &req, false); err != nil {
		return err
	}
	req.Name = c.r.PathValue("name")
	st, err := sup.StartWorker(c.writeCtx(), c.tenant, req)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, st)
}

func (a *API) getWorker(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	st, err := sup.Status(c.r.Context(), c.tenant, c.r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, st)
}

func (a *API) stopWorker(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	st, err := sup.StopWorker(c.writeCtx(), c.tenant, c.r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, st)
}

func (a *API) resetWorker(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	st, err := sup.ResetWorker(c.writeCtx(), c.tenant, c.r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, st)
}

// deleteWorker stops the worker if it runs and forgets it, its cursor's
// position included (hostedworker.Supervisor.DeleteWorker): 204.
func (a *API) deleteWorker(c *call) error {
	sup, err := a.workers()
	if err != nil {
		return err
	}
	if err := sup.DeleteWorker(c.writeCtx(), c.tenant, c.r.PathValue("name")); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
