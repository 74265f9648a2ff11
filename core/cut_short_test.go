package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// cutShortFS empties every file whose name ends in suffix right after
// mapping it, as another program truncating it in place would.
type cutShortFS struct {
	vfs.FS
	suffix string
}

func (c cutShortFS) MmapRead(f vfs.File, n int) ([]byte, error) {
	m, err := c.FS.MmapRead(f, n)
	if err == nil && strings.HasSuffix(f.Name(), c.suffix) {
		if err := os.Truncate(f.Name(), 0); err != nil {
			return nil, err
		}
	}
	return m, err
}

// A footer, checkpoint or segment cut short in place while Open reads
// its mapping (which faults: SIGBUS) fails that Open with an error wrapping
// ErrCorrupt instead of killing the process; the next Open reads what is
// left — an empty footer or checkpoint is skipped — and holds every event.
func TestOpenSurvivesFilesCutShortWhileMapped(t *testing.T) {
	base := footerBase(t, filepath.Join(t.TempDir(), "base"), false)
	for _, c := range []struct {
		name, suffix string
		skip         func(string) bool
	}{
		{"footer", ".idx", func(n string) bool { return n == checkpointFile }},
		{"checkpoint", checkpointFile, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := base
			ref.Dir = filepath.Join(t.TempDir(), "ref")
			copyTree(t, base.Dir, ref.Dir, noCheckpoint)
			rs := openWith(t, ref)
			want := captureState(t, rs)
			if err := rs.Close(); err != nil {
				t.Fatal(err)
			}
			cfg := base
			cfg.Dir = filepath.Join(t.TempDir(), "d")
			copyTree(t, base.Dir, cfg.Dir, c.skip)
			s, err := core.OpenReadOnlyWithFS(cfg, cutShortFS{vfs.Default(), c.suffix})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded over a file cut short under it")
			}
			if !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), "cut short") {
				t.Fatalf("got %v; want an error saying a file was cut short, wrapping ErrCorrupt", err)
			}
			s = openWith(t, cfg)
			sameState(t, "after the file was cut short", captureState(t, s), want)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
