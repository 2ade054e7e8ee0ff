//go:build race

package main

// raceBuild makes the test build the demo with the race detector too.
const raceBuild = true
