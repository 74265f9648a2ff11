//go:build !linux

package plugincompiler

import (
	"os"
	"os/exec"
)

// self is the running binary's path.
func self() (string, error) { return os.Executable() }

// setParentDeath does nothing here: the child ends at its timeout.
func setParentDeath(*exec.Cmd) {}
