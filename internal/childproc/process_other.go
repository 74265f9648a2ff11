//go:build !linux

package childproc

import (
	"os"
	"os/exec"
)

// Self is the running binary's path.
func Self() (string, error) { return os.Executable() }

// setParentDeath does nothing here: a child ends at its parent's
// deadline, or when it finds its standard input closed.
func setParentDeath(*exec.Cmd) {}
