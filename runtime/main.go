package runtime

import (
	"os"

	"github.com/bgworker/bgworker/runtime/internal/child"
)

// Main must be the first call in the host binary's main function. In the
// host it returns at once. In a child process (the host binary re-executed
// by the postmaster) it runs the assigned worker and exits with the
// worker's exit code; it never returns. Child mode needs both the marker
// in the environment and a bridge socket on fd 3 that completes the
// handshake; a binary started by hand with only the marker prints a short
// refusal and exits with code 64. Run by an in-place upgrade to check the
// running host's state, it says whether it can adopt it and exits.
func Main() { mainWith(child.Config{}) }

func mainWith(cfg child.Config) {
	if cookie, ok := child.Cookie(); ok {
		os.Exit(child.Run(cookie, cfg))
	}
	if _, ok := os.LookupEnv(envUpgradeCheck); ok {
		checkMode() // an upgrade checks, before its exec, that this binary can adopt the state
	}
}
