package runtime

import (
	"os/exec"
	"strings"
	"testing"
)

// Every worker's process is its host's binary re-executed, so what the
// runtime links every child carries. text/template (and html/template over
// it) calls methods by name through reflection, which makes the linker keep
// every exported method of every type in the binary: 3.5 MB more for the
// benchmark host, and 1.5 MiB more RSS in each of its children. Neither the
// runtime nor the packages a worker is written with may link it.
func TestNoTemplateLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := []string{".", "./bridge", "../actors", "../phases", "../shmactor",
		"../sample/spi", "../sample/crasher", "../sample/shmq", "../bench/cmd/bgwbench"}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "text/template" || dep == "html/template" {
			t.Errorf("%s is linked by one of %v", dep, pkgs)
		}
	}
}
