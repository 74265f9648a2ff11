package httpapi

import (
	_ "embed"
)

// OpenAPIDocument is the API's OpenAPI 3.1 description, served at
// GET /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPIDocument []byte

func (a *API) openapi(c *call) error {
	c.w.Header().Set("Content-Type", "application/json")
	c.w.Header().Set("Cache-Control", "public, max-age=300")
	_, err := c.w.Write(OpenAPIDocument)
	return err
}
