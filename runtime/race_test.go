//go:build race

package runtime

// raceEnabled says this test binary was built with the race detector.
const raceEnabled = true
