package runtime

import (
	"os"
	"os/exec"
	"syscall"
)

func execSleep() *exec.Cmd {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return cmd
}

// execEscaped starts sleep 300 in a session of its own, writing to this
// process's stdout and stderr: out of reach of a process-group kill, and
// holding the output pipe open.
func execEscaped() *exec.Cmd {
	cmd := exec.Command("sleep", "300")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return cmd
}
