package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func serveHandler(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
