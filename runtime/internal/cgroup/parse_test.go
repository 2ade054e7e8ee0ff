package cgroup

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const hybridMountInfo = `22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestParseMountInfo(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Mount
		err      string
	}{
		{name: "hybrid", in: hybridMountInfo, want: []Mount{{Root: "/", Point: "/sys/fs/cgroup/unified"}}},
		{name: "pure v2 with optional fields", in: "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
			want: []Mount{{Root: "/", Point: "/sys/fs/cgroup"}}},
		{name: "container read-only bind of a subtree", in: "700 690 0:26 /docker/abc /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw\n",
			want: []Mount{{Root: "/docker/abc", Point: "/sys/fs/cgroup", ReadOnly: true}}},
		{name: "escaped space", in: `50 41 0:38 /a\040b /mnt/cg\040two rw - cgroup2 cgroup2 rw` + "\n",
			want: []Mount{{Root: "/a b", Point: "/mnt/cg two"}}},
		{name: "v1 only", in: "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n", want: nil},
		{name: "no separator", in: "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime cgroup2 cgroup2 rw\n", err: "line 1 is malformed"},
		{name: "short line", in: "41 31 0:38 /\n", err: "line 1 is malformed"},
		{name: "bad escape", in: `41 31 0:38 /x\09z /p rw - cgroup2 cgroup2 rw` + "\n", err: "bad escape"},
		{name: "truncated escape", in: `41 31 0:38 /x\04 /p rw - cgroup2 cgroup2 rw` + "\n", err: "truncated escape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountInfo(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseMountInfo = %v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseMountInfo = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "hybrid", in: "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/d2cf\n1:cpu:/\n0::/\n", want: "/"},
		{name: "pure v2 service", in: "0::/system.slice/demo.service\n", want: "/system.slice/demo.service"},
		{name: "path with colon", in: "0::/a:b/c\n", want: "/a:b/c"},
		{name: "trailing slash cleaned", in: "0::/x/y/\n", want: "/x/y"},
		{name: "v1 only", in: "4:memory:/x\n1:cpu:/\n", err: "cgroup v1 only"},
		{name: "deleted", in: "0::/gone (deleted)\n", err: "has been removed"},
		{name: "outside namespace", in: "0::/../../user.slice\n", err: "outside its cgroup namespace"},
		{name: "relative", in: "0::x\n", err: "not absolute"},
		{name: "malformed", in: "garbage\n", err: "line 1 is malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcCgroup(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseProcCgroup = %q, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseProcCgroup = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := ParseProcCgroup(strings.NewReader("1:cpu:/\n")); !errors.Is(err, errNoV2) {
		t.Fatalf("v1-only error %v is not errNoV2", err)
	}
}

func TestResolve(t *testing.T) {
	mounts := []Mount{{Root: "/", Point: "/sys/fs/cgroup"}, {Root: "/docker/abc", Point: "/mnt/c"}}
	for _, tc := range []struct {
		name   string
		mounts []Mount
		cg     string
		want   string
		err    string
	}{
		{name: "root mount", mounts: mounts[:1], cg: "/system.slice/x.service", want: "/sys/fs/cgroup/system.slice/x.service"},
		{name: "own is the root", mounts: mounts[:1], cg: "/", want: "/sys/fs/cgroup"},
		{name: "longest root wins", mounts: mounts, cg: "/docker/abc/inner", want: "/mnt/c/inner"},
		{name: "exactly the bind root", mounts: mounts[1:], cg: "/docker/abc", want: "/mnt/c"},
		{name: "prefix is not a parent", mounts: mounts[1:], cg: "/docker/abcdef", err: "not visible under any cgroup2 mount"},
		{name: "no mount", cg: "/", err: "cgroup2 is not mounted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := Resolve(tc.mounts, tc.cg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Resolve = %q, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseKeyed(t *testing.T) {
	events := []byte("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 1\n")
	for _, tc := range []struct {
		key  string
		want uint64
		ok   bool
	}{{"oom_kill", 1, true}, {"oom", 2, true}, {"max", 3, true}, {"populated", 0, false}} {
		v, ok, err := parseKeyed(events, tc.key)
		if err != nil || v != tc.want || ok != tc.ok {
			t.Errorf("parseKeyed(%q) = %d, %v, %v; want %d, %v", tc.key, v, ok, err, tc.want, tc.ok)
		}
	}
	if _, _, err := parseKeyed([]byte("populated x\n"), "populated"); err == nil {
		t.Error("parseKeyed accepted a non-number")
	}
}

func TestParseStartTime(t *testing.T) {
	// The command may hold spaces and parentheses.
	stat := "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1234567 100 18446744073709551615"
	got, err := parseStartTime(stat)
	if err != nil || got != 987654 {
		t.Fatalf("parseStartTime = %d, %v; want 987654", got, err)
	}
	if _, err := parseStartTime("4242 (x) S 1 2"); err == nil {
		t.Fatal("parseStartTime accepted a short line")
	}
	if _, err := parseStartTime("no paren"); err == nil {
		t.Fatal("parseStartTime accepted a line without the command")
	}
}

func TestParseHomeName(t *testing.T) {
	for _, tc := range []struct {
		in    string
		pid   int
		start uint64
		ok    bool
	}{
		{"bgworker-123-456", 123, 456, true},
		{"bgworker-123", 0, 0, false},
		{"bgworker-x-456", 0, 0, false},
		{"bgworker-1-2-3", 0, 0, false},
	} {
		pid, start, ok := parseHomeName(tc.in)
		if ok != tc.ok || ok && (pid != tc.pid || start != tc.start) {
			t.Errorf("parseHomeName(%q) = %d, %d, %v; want %d, %d, %v", tc.in, pid, start, ok, tc.pid, tc.start, tc.ok)
		}
	}
}
