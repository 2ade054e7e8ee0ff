package cluster

import (
	"os/exec"
	"strings"
	"testing"
)

// A host that does not import this package links no grpc, and neither do
// its children (the same binary): the runtime, the bridge and the packages
// a worker is written with must not depend on grpc or on protoactor's
// remote and cluster.
func TestNoGRPCWithoutCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := []string{"../../runtime", "../../runtime/bridge", "../../actors", "../../phases", "../../shmactor",
		"../../sample/spi", "../../sample/crasher", "../../sample/shmq", "../../bench/cmd/bgwbench"}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"google.golang.org/grpc", "github.com/asynkron/protoactor-go/remote",
			"github.com/asynkron/protoactor-go/cluster", "github.com/bgworker/bgworker/runtime/cluster"} {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("%s is linked by one of %v", dep, pkgs)
			}
		}
	}
}
