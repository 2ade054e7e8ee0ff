// Command bgwpeers measures hashicorp/go-plugin for the bench command of
// the runtime: run by bgwbench (its -peers flag), it reads the commands of
// package peers' driver on stdin and answers on stdout. Re-executed by
// go-plugin with the handshake cookie set, it is the echo plugin.
//
//	printf 'start netrpc\nrtt netrpc 100 5\nkill netrpc\n' | bgwpeers
//
// It ignores SIGINT: a Ctrl-C in the terminal reaches the whole process
// group, and bgwpeers must outlive it to kill its plugins when bgwbench
// closes its stdin (EOF or quit), or they would be left behind.
package main

import (
	"fmt"
	"os"
	"os/signal"

	"github.com/bgworker/bgworker/bench/peers"
)

func main() {
	peers.ServePlugin() // the plugin process: serves and exits
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: bgwpeers < commands (see package peers); it takes no arguments")
		os.Exit(2)
	}
	signal.Ignore(os.Interrupt)
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bgwpeers: %v\n", err)
		os.Exit(1)
	}
	if err := peers.NewDriver(exe).Drive(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bgwpeers: %v\n", err)
		os.Exit(1)
	}
}
