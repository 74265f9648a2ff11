package plugincompiler

import (
	"os/exec"
	"syscall"
)

// self is the running binary: /proc/self/exe names the file this process
// was started from even after it is replaced on disk (an upgrade in
// place), so the child always matches the parent's compiler and cache.
func self() (string, error) { return "/proc/self/exe", nil }

// setParentDeath kills the child if the server dies first.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
