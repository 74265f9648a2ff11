package tenantplugin

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/control"
)

// TestManifestFaultsBounded: a manifest cannot ask for more consecutive
// faults before quarantine than maxFaults (each fault may be a whole
// call timeout of the host's CPU); fewer are kept as asked.
func TestManifestFaultsBounded(t *testing.T) {
	l := Limits{MemoryBytes: 16 << 20, CallTimeout: time.Second, OutputBytes: 1 << 20, LogLines: 100, LogBytes: 64 << 10}
	for asked, want := range map[int]int{1000000000: maxFaults, 3: 3, 0: 0, -7: 0} {
		raw := fmt.Sprintf(`{"name":"p","version":"1","kind":"projection","limits":{"max_faults":%d}}`, asked)
		for _, strict := range []bool{false, true} {
			mf, err := manifestFor([]byte(raw), l, strict)
			if err != nil || mf.Limits.MaxFaults != want {
				t.Fatalf("max_faults %d (strict %v): %d, %v; want %d", asked, strict, mf.Limits.MaxFaults, err, want)
			}
		}
	}
}

// TestManifestUploadChecks: an upload's manifest repeating a member (even
// spelled with an escape) or asking a negative timeout is refused naming
// the member; a manifest refused before it names a plugin says so, not
// "plugin ?"; a stored version's manifest still loads as it was accepted.
func TestManifestUploadChecks(t *testing.T) {
	l := Limits{MemoryBytes: 16 << 20, CallTimeout: time.Second, OutputBytes: 1 << 20, LogLines: 100, LogBytes: 64 << 10}
	for raw, want := range map[string]string{
		`{"name":"a","version":"1","kind":"projection","name":"b"}`:                               `plugin manifest refused: the manifest repeats the member "name" (at byte 46)`,
		`{"name":"a","version":"1","kind":"projection","limits":{"timeout":"1s","timeout":"2s"}}`: `repeats the member "timeout"`,
		`{"name":"a","version":"1","kind":"projection","n\u0061me":"b"}`:                          `repeats the member "name"`,
		`{"name":"a","version":"1","kind":"projection","limits":{"timeout":"-1s"}}`:               `plugin a refused: limits.timeout -1s is negative`,
		`{"name":"a","version":"1","kind":"projection"} {}`:                                       `plugin manifest refused: the manifest is not a plugin manifest`,
		`{"name":"a","version":"1","kind":"projection","color":"red"}`:                            `plugin manifest refused: the manifest is not a plugin manifest`,
	} {
		_, err := manifestFor([]byte(raw), l, true)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
	// Stored (not strict): loads, the timeout fitted to the tenant's.
	mf, err := manifestFor([]byte(`{"name":"a","version":"1","kind":"projection","limits":{"timeout":"-1s"},"name":"a"}`), l, false)
	if err != nil || time.Duration(mf.Limits.Timeout) != time.Second {
		t.Errorf("stored manifest: %+v, %v", mf.Limits, err)
	}
}

// TestManifestClockRandomGrants: a manifest granting the real clock or
// randomness is refused, at upload and when a kept version loads, naming
// server.plugins.allow_clock_random, unless the server allows them (a
// cluster's nodes each fold a projection: with either grant its state
// would differ by node); an environment grant is always given.
func TestManifestClockRandomGrants(t *testing.T) {
	l := Limits{MemoryBytes: 16 << 20, CallTimeout: time.Second, OutputBytes: 1 << 20, LogLines: 100, LogBytes: 64 << 10}
	allowed := l
	allowed.AllowClockRandom = true
	for grants, want := range map[string]string{
		`{"clock":true}`:                  `grants "clock", which this server does not give`,
		`{"random":true}`:                 `grants "random", which this server does not give`,
		`{"clock":true,"random":true}`:    `grants "clock" and "random"`,
		`{"env":{"A":"1"}}`:               "",
		`{"env":{"A":"1"},"clock":false}`: "",
	} {
		raw := []byte(`{"name":"p","version":"1","kind":"projection","grants":` + grants + `}`)
		for _, strict := range []bool{true, false} {
			mf, err := manifestFor(raw, l, strict)
			switch {
			case want == "" && err != nil:
				t.Errorf("grants %s (strict %v): %v", grants, strict, err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "server.plugins.allow_clock_random")):
				t.Errorf("grants %s (strict %v): %v, want a refusal naming %q and the setting", grants, strict, err, want)
			}
			if mf, err = manifestFor(raw, allowed, strict); err != nil || mf.Grants.Env == nil && !mf.Grants.Clock && !mf.Grants.Random {
				t.Errorf("grants %s allowed (strict %v): %+v, %v", grants, strict, mf.Grants, err)
			}
		}
	}
	if under(allowed, control.Quotas{}).AllowClockRandom != true || under(l, control.Quotas{}).AllowClockRandom {
		t.Error("a tenant's limits do not carry the server's allow_clock_random")
	}
}
