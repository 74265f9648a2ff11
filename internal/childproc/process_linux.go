package childproc

import (
	"os/exec"
	"syscall"
)

// Self is the running binary: /proc/self/exe names the file this process
// was started from even after it is replaced on disk (an upgrade in
// place), so a child always runs the parent's code.
func Self() (string, error) { return "/proc/self/exe", nil }

func setParentDeath(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
