package main

import (
	"io"
	"strings"
	"testing"
)

// The cluster flags: -peers turns cluster mode on and needs -bind; -bind
// and -member alone are refused with a message naming what is missing.
func TestClusterFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string // "" = accepted
	}{
		{nil, ""},
		{[]string{"-bind", "127.0.0.1:7101", "-peers", "127.0.0.1:7101,127.0.0.1:7102", "-member", "m1"}, ""},
		{[]string{"-bind", "127.0.0.1:7101"}, "need -peers"},
		{[]string{"-member", "m1"}, "need -peers"},
		{[]string{"-peers", "127.0.0.1:7101"}, "needs -bind"},
	} {
		o, err := parseFlags(c.args, io.Discard)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("parseFlags(%q) = %v, want accepted", c.args, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("parseFlags(%q) = %v, want an error with %q", c.args, err, c.err)
		case c.err == "" && len(c.args) > 0 && (o.cluster.bind != "127.0.0.1:7101" || o.cluster.member != "m1"):
			t.Errorf("parseFlags(%q) = %+v", c.args, o.cluster)
		}
	}
}
