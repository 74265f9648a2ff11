package httpapi_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/batpak-go/batpak/server/httpapi"
)

// A load balancer at 10.0.0.5 passes on a request; the client's own
// X-Forwarded-For claimed 1.1.1.1, and the balancer appended the address
// that reached it. Reading from the right past the trusted proxies finds
// the client; the claim left of it is never read.
func ExampleTrustedProxies_Client() {
	trusted, err := httpapi.ParseTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		panic(err)
	}
	r := httptest.NewRequest("GET", "/healthz", nil)
	r.RemoteAddr = "10.0.0.5:41000"
	r.Header.Set("X-Forwarded-For", "1.1.1.1, 203.0.113.7")
	client, viaProxy, _ := trusted.Client(r)
	fmt.Println(client, viaProxy)

	// The same header from an address that is not trusted names no one.
	r.RemoteAddr = "198.51.100.2:5000"
	client, viaProxy, _ = trusted.Client(r)
	fmt.Println(client, viaProxy)
	// Output:
	// 203.0.113.7 true
	// 198.51.100.2 false
}
