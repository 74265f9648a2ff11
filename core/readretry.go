package core

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// segmentFiles names the segment files in dir and says whether a
// compaction journal is there (a compaction is committing): a read-only
// reader compares it before and after a read that failed.
func segmentFiles(fsys vfs.FS, dir string) string {
	ents, _ := fsys.ReadDir(dir)
	var b strings.Builder
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, format.SegmentSuffix) || n == compactJournal || n == redactJournal {
			b.WriteString(n)
			b.WriteByte('\n')
		}
	}
	if _, err := fsys.Stat(filepath.Join(dir, compactJournal)); err == nil {
		b.WriteString("(journal)") // present at the end too
	}
	return b.String()
}

// readBesideWriter runs read, a read of the whole log by a read-only
// store, and runs it again (up to 8 times, a few milliseconds apart) while
// it fails in a way a live writer explains: files changing under it — a
// frame half written at the tail, segments replaced by a compaction or
// packing (events seen twice or not at all while it commits), a frame
// being redacted in place (a redaction journal is there). Damage
// stays; those pass. It returns read's last error.
func readBesideWriter(fsys vfs.FS, dir string, read func() error) error {
	files := segmentFiles(fsys, dir)
	err := read()
	for try := 1; err != nil && try <= 8; try++ {
		now := segmentFiles(fsys, dir)
		if !liveChange(err) && now == files && !(isCorrupt(err) && redacting(fsys, dir)) {
			break
		}
		files = now
		time.Sleep(time.Duration(try) * 2 * time.Millisecond)
		err = read()
	}
	return err
}

// isCorrupt reports whether err is damage found in the store's files
// (which a frame a live writer redacts in place looks like for a moment).
func isCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

// liveChange reports whether err may come from files a live writer was
// changing under a read-only reader (see CorruptionError.live), rather
// than from damage.
func liveChange(err error) bool {
	var ce *CorruptionError
	return errors.Is(err, os.ErrNotExist) || (errors.As(err, &ce) && ce.live)
}
