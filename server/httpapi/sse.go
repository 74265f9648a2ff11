package httpapi

func (a *API) subscribe(c *call) error {
	return &apiError{status: 501, code: "INTERNAL", detail: "event streams are not available yet"}
}
