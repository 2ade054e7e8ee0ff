package phases_test

import (
	"fmt"

	"github.com/bgworker/bgworker/phases"
)

func Example() {
	for _, p := range phases.All() {
		fmt.Println(p, p < phases.RecoveryFinished)
	}
	m := phases.Fast
	fmt.Println(m)
	// Output:
	// postmaster_start true
	// consistent_state true
	// recovery_finished false
	// fast
}
