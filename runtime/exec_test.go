package runtime

import "os/exec"

func execSleep() *exec.Cmd {
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return cmd
}
