package segment

import "fmt"

// CorruptError reports a segment file whose content or set fails a check.
// core turns it into a *core.CorruptionError with the same file and reason.
type CorruptError struct {
	File   string
	Reason string
	// Live: a state a reader beside a live writer can see while files
	// change (two generations of a segment mid-compaction); a read-only
	// store lists again before reporting it.
	Live bool
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("batpak: corrupt segment %s: %s", e.File, e.Reason)
}

// LockedError reports that another process holds the store's writer lock.
type LockedError struct {
	Dir string
	PID int // 0 when the holder's pid could not be read
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("batpak: store %s is locked by pid %d", e.Dir, e.PID)
}
