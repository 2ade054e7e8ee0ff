// Package peers measures hashicorp/go-plugin (v1.8, net/rpc and gRPC), the
// best-known Go process bridge, so that the bridge suite of package bench
// can print it beside the runtime in the same run.
//
// It is its own Go module, so that the runtime's module never depends on
// go-plugin, and it imports nothing of the runtime: the plugin process is
// this module's binary re-executed, and it should carry go-plugin's cost,
// not ours.
//
// # The plugin
//
// One plugin, "echo", with one call: Echo([]byte) returns its argument.
// Protocol version 1 serves it over net/rpc ([EchoNetRPC]), version 2 over
// gRPC ([EchoGRPC], a hand-written service on wrapperspb.BytesValue, so no
// generated code). A binary that calls [ServePlugin] first in main serves
// both: go-plugin picks the version the host asks for.
//
// # The driver
//
// [Drive] runs a line protocol on a reader and a writer (bgwpeers uses its
// stdin and stdout), so that the bench command can interleave go-plugin's
// measurements with its own, one at a time. Each command is one line and
// gets one line back, "ok" followed by durations in nanoseconds, or "err"
// and a message:
//
//	start KIND          ok NS          NewClient → Client → Dispense → first Echo of 64 B returned
//	rtt KIND WARM N     ok NS NS ...   N Echo round trips of 64 B, timed one by one, after WARM untimed
//	kill KIND           ok NS          Client.Kill (graceful: the plugin is asked to quit, then reaped)
//	quit                ok             kill every client and return
//
// KIND is netrpc or grpc; one client of each kind is open at a time. EOF
// on the reader is quit.
package peers
