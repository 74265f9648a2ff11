package tenantplugin

import (
	"fmt"
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
