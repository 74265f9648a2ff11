//go:build unix

package certroots_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/batpak-go/batpak/internal/certroots"
)

// A FIFO as the CA file is refused at once, not waited on for a writer.
func TestLoadRefusesAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, err := certroots.Load(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a FIFO: %v", err)
	}
}
