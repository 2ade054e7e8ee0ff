package shmactor

import (
	"context"
	"fmt"
	"time"
)

// WaitSlice is the longest a blocked call sleeps in one futex wait before it
// rechecks its context and whether its peer is still alive. It bounds how
// late a cancellation or a peer's death is noticed.
const WaitSlice = 5 * time.Millisecond

// waitSlice returns how long to sleep before rechecking ctx, or ctx's error,
// prefixed with the package name, if it is done.
func waitSlice(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("shmactor: %w", err)
	}
	d := WaitSlice
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			d = max(left, 0)
		}
	}
	return d, nil
}
