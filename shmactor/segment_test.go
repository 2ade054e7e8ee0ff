package shmactor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["open"] = helperOpen
}

// fill is the pattern the round-trip test's Init writes.
func fill(mem []byte, seed byte) {
	for i := range mem {
		mem[i] = seed + byte(i*7)
	}
}

// testRegions are the regions of the round-trip test; inits counts Init calls.
func testRegions(inits *[3]int) []Region {
	check := func(i, size int, seed byte) func([]byte) {
		return func(mem []byte) {
			inits[i]++
			if len(mem) != size || cap(mem) != size {
				panic(fmt.Sprintf("region %d: len %d cap %d, want %d", i, len(mem), cap(mem), size))
			}
			if !bytes.Equal(mem, make([]byte, size)) {
				panic(fmt.Sprintf("region %d: Init on memory that is not zeroed", i))
			}
			fill(mem, seed)
		}
	}
	return []Region{
		{Name: "alpha", Size: 1, Init: check(0, 1, 1)},
		{Name: "beta", Size: 10000, Init: check(1, 10000, 2)},
		{Name: "flag", Size: 64},
		{Name: strings.Repeat("g", MaxNameLen), Size: 4096, Init: check(2, 4096, 3)},
	}
}

// helperOpen maps the segment, checks what Init wrote, checks the seals,
// and answers by setting the word in region "flag".
func helperOpen() error {
	seg, err := helperSegment()
	if err != nil {
		return err
	}
	defer seg.Close()
	if got, want := seg.Generation(), uint64(envInt("SHMTEST_GEN")); got != want {
		return fmt.Errorf("Generation() = %d, want %d", got, want)
	}
	var inits [3]int
	want := testRegions(&inits)
	got := seg.Regions()
	if len(got) != len(want) {
		return fmt.Errorf("Regions() = %v, want %d regions", got, len(want))
	}
	for i, ri := range got {
		if ri.Name != want[i].Name || ri.Size != want[i].Size || ri.Offset%RegionAlign != 0 {
			return fmt.Errorf("Regions()[%d] = %+v, want %q of %d bytes", i, ri, want[i].Name, want[i].Size)
		}
	}
	for i, name := range []string{"alpha", "beta", want[3].Name} {
		mem, err := seg.Region(name)
		if err != nil {
			return err
		}
		exp := make([]byte, len(mem))
		fill(exp, byte(i+1))
		if !bytes.Equal(mem, exp) {
			return fmt.Errorf("region %q does not hold what Init wrote", name)
		}
	}
	if inits != [3]int{} {
		return fmt.Errorf("Init ran in the child: %v", inits)
	}
	// The seals: no one holding the memfd can resize it or unseal it.
	fd := int(seg.File().Fd())
	size := int64(seg.Size())
	for _, n := range []int64{0, size - PageSize, size + PageSize} {
		if err := unix.Ftruncate(fd, n); !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("ftruncate(%d) = %v, want EPERM", n, err)
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("F_ADD_SEALS = %v, want EPERM", err)
	}
	flag, err := seg.Region("flag")
	if err != nil {
		return err
	}
	Uint64At(flag, 0).Store(0xc0ffee)
	return nil
}

func TestBuildOpenRoundTrip(t *testing.T) {
	checkLeaks(t)
	ctx := testContext(t)
	for gen := uint64(1); gen <= 2; gen++ {
		var inits [3]int
		seg, err := Build(gen, testRegions(&inits))
		if err != nil {
			t.Fatal(err)
		}
		if inits != [3]int{1, 1, 1} {
			t.Errorf("generation %d: Init calls = %v, want one each", gen, inits)
		}
		if seg.Generation() != gen || seg.Size()%PageSize != 0 {
			t.Errorf("Generation() = %d, Size() = %d", seg.Generation(), seg.Size())
		}
		c := startChild(ctx, t, "open", seg, "SHMTEST_GEN="+strconv.FormatUint(gen, 10))
		c.mustSucceed()
		flag, err := seg.Region("flag")
		if err != nil {
			t.Fatal(err)
		}
		if got := Uint64At(flag, 0).Load(); got != 0xc0ffee {
			t.Errorf("flag word = %#x after the child wrote it, want 0xc0ffee", got)
		}
		if inits != [3]int{1, 1, 1} {
			t.Errorf("generation %d: Init calls = %v after the child opened it", gen, inits)
		}
		if err := seg.Close(); err != nil {
			t.Fatal(err)
		}
		if err := seg.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if _, err := seg.Region("alpha"); !errors.Is(err, ErrClosed) {
			t.Errorf("Region after Close = %v, want ErrClosed", err)
		}
	}
}

func TestSegmentLayout(t *testing.T) {
	checkLeaks(t)
	seg, err := Build(7, []Region{{Name: "a", Size: 1}, {Name: "b", Size: 65}, {Name: "c", Size: 64}})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	want := []RegionInfo{{"a", PageSize, 1}, {"b", PageSize + 64, 65}, {"c", PageSize + 192, 64}}
	if got := seg.Regions(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Regions() = %v, want %v", got, want)
	}
	if seg.Size() != 2*PageSize {
		t.Errorf("Size() = %d, want %d", seg.Size(), 2*PageSize)
	}
	if _, err := seg.Region("nope"); !errors.Is(err, ErrNoRegion) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf(`Region("nope") = %v, want ErrNoRegion naming it`, err)
	}
	// The host never reads the header back: scribbling on it changes
	// nothing for the host, while a new Open refuses it.
	copy(seg.mem, bytes.Repeat([]byte{0xff}, PageSize))
	if got := seg.Regions(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Regions() after scribbling = %v, want %v", got, want)
	}
	if b, err := seg.Region("b"); err != nil || len(b) != 65 {
		t.Errorf(`Region("b") after scribbling = %d bytes, %v`, len(b), err)
	}
	f := dupFile(t, seg.File())
	defer f.Close()
	if s2, err := Open(f); !errors.Is(err, errCorruptHeader) {
		t.Errorf("Open of the scribbled segment = %v, want a corrupt header error", err)
		if s2 != nil {
			s2.Close()
		}
	}
}

func dupFile(t *testing.T, f *os.File) *os.File {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func TestBuildErrors(t *testing.T) {
	checkLeaks(t)
	tests := []struct {
		name    string
		regions []Region
		want    string
	}{
		{"empty name", []Region{{Name: "", Size: 1}}, "empty name"},
		{"duplicate", []Region{{Name: "a", Size: 1}, {Name: "a", Size: 2}}, "duplicate"},
		{"zero size", []Region{{Name: "a", Size: 0}}, "size 0"},
		{"negative size", []Region{{Name: "a", Size: -1}}, "size -1"},
		{"long name", []Region{{Name: strings.Repeat("x", MaxNameLen+1), Size: 1}}, "longer than"},
		{"NUL", []Region{{Name: "a\x00b", Size: 1}}, "NUL"},
		{"bad UTF-8", []Region{{Name: "a\xff", Size: 1}}, "UTF-8"},
		{"huge", []Region{{Name: "a", Size: MaxSegmentSize}}, "larger than"},
		{"init panics", []Region{{Name: "a", Size: 1, Init: func([]byte) { panic("boom") }}}, "init panicked: boom"},
	}
	for _, tt := range tests {
		seg, err := Build(1, tt.regions)
		if err == nil {
			seg.Close()
			t.Errorf("%s: Build succeeded", tt.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "shmactor: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Build error %q, want one containing %q", tt.name, err, tt.want)
		}
	}
	// No regions at all is a valid, if useless, segment.
	seg, err := Build(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	seg.Close()
}

// memfdWith returns a memfd holding data, sealed like a segment if seal.
func memfdWith(t *testing.T, data []byte, seal bool) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "test")
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if seal {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// segmentImage returns a copy of a freshly built segment's bytes.
func segmentImage(t *testing.T) []byte {
	t.Helper()
	seg, err := Build(3, []Region{{Name: "one", Size: 100}, {Name: "two", Size: 200}})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	return append([]byte(nil), seg.mem...)
}

func TestOpenCorruptHeader(t *testing.T) {
	checkLeaks(t)
	le := binary.LittleEndian
	entry := func(i int) int { return tableStart + i*entryLen }
	tests := []struct {
		name   string
		mutate func(h []byte)
		keep   bool // leave the checksum as it is (wrong)
	}{
		{"checksum", func(h []byte) { h[entry(0)+entryNameOff] = 'X' }, true},
		{"magic", func(h []byte) { h[0] = 'B' }, false},
		{"version", func(h []byte) { le.PutUint32(h[offVersion:], 2) }, false},
		{"header length zero", func(h []byte) { le.PutUint32(h[offHeaderLen:], 0) }, false},
		{"header length unaligned", func(h []byte) { le.PutUint32(h[offHeaderLen:], PageSize+1) }, false},
		{"header length past end", func(h []byte) { le.PutUint32(h[offHeaderLen:], 1<<31) }, false},
		{"total size", func(h []byte) { le.PutUint64(h[offTotal:], 1<<20) }, false},
		{"count huge", func(h []byte) { le.PutUint32(h[offCount:], 1<<31) }, false},
		{"count high", func(h []byte) { le.PutUint32(h[offCount:], 3) }, false},
		{"count low", func(h []byte) { le.PutUint32(h[offCount:], 1) }, false},
		{"reserved", func(h []byte) { h[offReserved] = 1 }, false},
		{"name length zero", func(h []byte) { h[entry(0)] = 0 }, false},
		{"name length long", func(h []byte) { h[entry(0)] = MaxNameLen + 1 }, false},
		{"name padding", func(h []byte) { h[entry(0)+entryOffsetOff-1] = 'x' }, false},
		{"name UTF-8", func(h []byte) { h[entry(0)+entryNameOff] = 0xff }, false},
		{"name NUL", func(h []byte) { h[entry(0)+entryNameOff] = 0 }, false},
		{"duplicate", func(h []byte) { copy(h[entry(1):entry(1)+entryOffsetOff], h[entry(0):]) }, false},
		{"offset unaligned", func(h []byte) { le.PutUint64(h[entry(0)+entryOffsetOff:], PageSize+8) }, false},
		{"offset in header", func(h []byte) { le.PutUint64(h[entry(0)+entryOffsetOff:], 0) }, false},
		{"offset past end", func(h []byte) { le.PutUint64(h[entry(1)+entryOffsetOff:], 1<<62) }, false},
		{"size zero", func(h []byte) { le.PutUint64(h[entry(1)+entrySizeOff:], 0) }, false},
		{"size past end", func(h []byte) { le.PutUint64(h[entry(1)+entrySizeOff:], PageSize) }, false},
		{"size wraps", func(h []byte) { le.PutUint64(h[entry(1)+entrySizeOff:], 1<<64-64) }, false},
		{"overlap", func(h []byte) { le.PutUint64(h[entry(0)+entrySizeOff:], 200) }, false},
	}
	for _, tt := range tests {
		img := segmentImage(t)
		tt.mutate(img)
		if !tt.keep {
			le.PutUint32(img[offChecksum:], headerChecksum(img[:PageSize]))
		}
		f := memfdWith(t, img, true)
		seg, err := Open(f)
		if err == nil {
			seg.Close()
			t.Errorf("%s: Open succeeded", tt.name)
			continue
		}
		f.Close()
		if !errors.Is(err, errCorruptHeader) || !strings.HasPrefix(err.Error(), "shmactor: ") {
			t.Errorf("%s: Open error %q, want a corrupt header error", tt.name, err)
		}
	}
	// The unmodified image opens.
	f := memfdWith(t, segmentImage(t), true)
	seg, err := Open(f)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	if got := fmt.Sprint(seg.Regions()); got != "[{one 4096 100} {two 4224 200}]" {
		t.Errorf("Regions() = %s", got)
	}
	seg.Close()
}

// TestParseHeaderScribbles scribbles random bytes over a valid header, with
// and without fixing the checksum: parsing must fail or succeed, never panic,
// and whatever it accepts must lie inside the segment.
func TestParseHeaderScribbles(t *testing.T) {
	t.Parallel()
	img := segmentImage(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		h := append([]byte(nil), img...)
		for range 1 + rng.IntN(4) {
			p := rng.IntN(tableStart + 2*entryLen + 8)
			if rng.IntN(2) == 0 {
				h[p] = byte(rng.Uint32())
			} else {
				h[p] ^= 1 << rng.IntN(8)
			}
		}
		if i%8 != 0 {
			binary.LittleEndian.PutUint32(h[offChecksum:], headerChecksum(h[:PageSize]))
		}
		checkParse(t, h)
	}
}

func checkParse(t *testing.T, mem []byte) {
	_, infos, err := parseHeader(mem)
	if err != nil {
		return
	}
	end := PageSize
	for _, ri := range infos {
		if ri.Offset < end || ri.Size <= 0 || ri.Offset+ri.Size > len(mem) {
			t.Fatalf("parseHeader accepted region %+v in a %d-byte segment", ri, len(mem))
		}
		end = ri.Offset + ri.Size
	}
}

func FuzzParseHeader(f *testing.F) {
	seg, err := Build(3, []Region{{Name: "one", Size: 100}, {Name: "two", Size: 200}})
	if err != nil {
		f.Fatal(err)
	}
	img := append([]byte(nil), seg.mem...)
	seg.Close()
	f.Add(img[:tableStart+2*entryLen])
	f.Fuzz(func(t *testing.T, hdr []byte) {
		mem := append([]byte(nil), img...)
		copy(mem, hdr)
		binary.LittleEndian.PutUint32(mem[offChecksum:], headerChecksum(mem[:PageSize]))
		checkParse(t, mem)
	})
}

func TestOpenRefusesUnsealed(t *testing.T) {
	checkLeaks(t)
	img := segmentImage(t)
	for _, tt := range []struct {
		name string
		file func() *os.File
		want string
	}{
		{"unsealed memfd", func() *os.File { return memfdWith(t, img, false) }, "seals"},
		{"regular file", func() *os.File {
			f, err := os.Create(t.TempDir() + "/seg")
			if err != nil {
				t.Fatal(err)
			}
			f.Write(img)
			return f
		}, "seals"},
		{"pipe", func() *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			w.Close()
			return r
		}, "seals"},
		{"empty sealed memfd", func() *os.File { return memfdWith(t, nil, true) }, "size 0"},
		{"nil", func() *os.File { return nil }, "nil file"},
	} {
		f := tt.file()
		seg, err := Open(f)
		if err == nil {
			seg.Close()
			t.Errorf("%s: Open succeeded", tt.name)
			continue
		}
		if f != nil {
			f.Close()
		}
		if !strings.HasPrefix(err.Error(), "shmactor: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Open error %q, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// memfds counts this process's open memfd descriptors.
func memfds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "/memfd:") {
			n++
		}
	}
	return n
}

// Retire gives the memfd back at once, keeps the host's old slices valid
// (zeros, privately writable) and refuses new Region calls, while a mapping
// that another holder took before keeps the shared data.
func TestRetire(t *testing.T) {
	base := memfds(t)
	seg, err := Build(7, []Region{{Name: "r", Size: 8192}})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := seg.Region("r")
	if err != nil {
		t.Fatal(err)
	}
	fill(mem, 9)
	other, err := Open(dupFile(t, seg.File()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := memfds(t) - base; got != 2 {
		t.Fatalf("%d memfds open before Retire, want 2", got)
	}
	if err := seg.Retire(); err != nil {
		t.Fatal(err)
	}
	if err := seg.Retire(); err != nil {
		t.Fatalf("second Retire: %v", err)
	}
	if !seg.Retired() {
		t.Fatal("Retired() = false after Retire")
	}
	if got := memfds(t) - base; got != 1 {
		t.Fatalf("%d memfds open after Retire, want 1 (the other holder's)", got)
	}
	if !bytes.Equal(mem, make([]byte, len(mem))) {
		t.Fatal("an old slice of a retired segment does not read zeros")
	}
	mem[0] = 1 // private memory: writable, and seen by nobody else
	omem, err := other.Region("r")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(omem))
	fill(want, 9)
	if !bytes.Equal(omem, want) {
		t.Fatal("the other holder lost the shared data when the host retired its mapping")
	}
	if _, err := seg.Region("r"); !errors.Is(err, ErrRetired) {
		t.Fatalf("Region after Retire = %v, want ErrRetired", err)
	}
	if err := seg.Close(); err != nil {
		t.Fatalf("Close after Retire: %v", err)
	}
	if err := seg.Retire(); err != nil {
		t.Fatalf("Retire after Close: %v", err)
	}
}
