package tenantpolicy

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the policy sandbox's child.
func TestMain(m *testing.M) {
	RunChild()
	os.Exit(m.Run())
}
