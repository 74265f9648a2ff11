package hostedworker

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestOpenFaultShowsNoPath: a worker whose tenant store would not open
// shows the tenant why (a damaged store: which kind of damage) without a
// path of the server's, and the fault still matches the cause.
func TestOpenFaultShowsNoPath(t *testing.T) {
	corrupt := fmt.Errorf("tenancy: open acme: %w", &core.CorruptionError{File: "/srv/batpak/tenants/acme/00000000000000000001.seg", Offset: 2999779, Reason: "frame fails its length or checksum check"})
	other := errors.New(`open "/srv/batpak/tenants/acme/index.ckpt": permission denied`)
	for _, c := range []struct {
		err  error
		want string
	}{{corrupt, "store is damaged (a segment holds bytes that fail their checks)"}, {other, `open "<store>": permission denied`}} {
		got := openFault(c.err)
		if strings.Contains(got.Error(), "/srv/") || !strings.Contains(got.Error(), c.want) || !errors.Is(got, c.err) {
			t.Errorf("openFault(%v) = %q; want it to say %q, without the path, still matching the cause", c.err, got, c.want)
		}
	}
}
