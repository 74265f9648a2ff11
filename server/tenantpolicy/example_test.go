package tenantpolicy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

// A tenant pushes a bundle denying entities under secret:; its writes
// are judged by it — in a child process when the binary can start one
// (its main, here TestMain, calls tenantpolicy.RunChild).
func Example() {
	dir, _ := os.MkdirTemp("", "batpak-tenantpolicy")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	plane, _ := control.Open(control.Options{Dir: filepath.Join(dir, "control")})
	defer plane.Close()
	_, _ = plane.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{})
	m, err := tenantpolicy.Open(ctx, tenantpolicy.Options{Dir: filepath.Join(dir, "policies"), Plane: plane, Isolate: tenantpolicy.Available()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	rego := `package batpak.write

deny contains {"code": "NO_SECRETS", "message": "secret entities are off limits"} if startswith(input.event.entity, "secret:")
`
	_ = tw.WriteHeader(&tar.Header{Name: "policy.rego", Mode: 0o644, Size: int64(len(rego)), Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte(rego))
	_ = tw.Close()
	_ = zw.Close()
	if _, err := m.Push(ctx, "acme", &buf); err != nil {
		fmt.Println(err)
		return
	}

	adm := m.Admission("acme", nil)
	for _, entity := range []string{"order:1", "secret:1"} {
		coord, _ := core.NewCoordinate(entity, "shop")
		err := adm.Admit(ctx, &core.Proposal{Coordinate: coord, Kind: core.Kind(0x1001), Payload: []byte(`{}`), Action: core.ActionAppend, BatchIndex: -1})
		var d *policy.Denial
		if errors.As(err, &d) {
			fmt.Println(entity, "denied:", d.Code, "by the", d.Layer, "layer")
		} else {
			fmt.Println(entity, "admitted", err)
		}
	}
	// Output:
	// order:1 admitted <nil>
	// secret:1 denied: NO_SECRETS by the tenant layer
}
