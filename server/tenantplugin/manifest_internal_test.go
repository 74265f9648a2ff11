package tenantplugin

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
