//go:build !wasip1

package guest

import (
	"fmt"
	"os"

	"github.com/batpak-go/batpak/plugins/abi"
)

// writeLog, built natively, has no host to send the line to: it writes it
// to standard error (see Log).
func writeLog(level uint32, msg string) {
	fmt.Fprintf(os.Stderr, "batpak plugin log %s: %q\n", levelName(level), msg)
}

func levelName(level uint32) string {
	switch level {
	case abi.LogDebug:
		return "debug"
	case abi.LogInfo:
		return "info"
	case abi.LogWarn:
		return "warn"
	case abi.LogError:
		return "error"
	}
	return fmt.Sprintf("level %d", level)
}
