package shmactor

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is a named piece of shared memory that a worker spec requests, like
// PostgreSQL's RequestAddinShmemSpace followed by ShmemInitStruct.
type Region struct {
	// Name identifies the region in the segment: 1 to MaxNameLen bytes of
	// UTF-8, no NUL, unique within the segment.
	Name string
	// Size is the region's length in bytes, > 0.
	Size int
	// Init, if not nil, initialises the region. It runs exactly once per
	// segment generation, in the process that calls Build, on zeroed memory,
	// before any child can map the segment. nil leaves the region zeroed.
	Init func(mem []byte)
}

// RegionInfo describes where a region lies in a segment.
type RegionInfo struct {
	Name   string // the region's name
	Offset int    // from the start of the segment; a multiple of RegionAlign
	Size   int    // in bytes
}

// ErrNoRegion is returned, wrapped with the name, by [Segment.Region] for a
// name that the segment does not hold.
var ErrNoRegion = errors.New("shmactor: no such region")

// ErrClosed is returned by [Segment.Region] after [Segment.Close].
var ErrClosed = errors.New("shmactor: segment closed")

// ErrRetired is returned by [Segment.Region] after [Segment.Retire]: the
// segment's generation has been replaced.
var ErrRetired = errors.New("shmactor: segment retired: its generation was replaced")

// Segment is one generation of shared memory: a sealed memfd mapped shared
// into this process. Build makes one in the host; Open maps one in a child.
//
// Its methods are safe for concurrent use. Slices returned by Region, and
// pointers made from them, must not be used after Close: the memory is
// unmapped and touching it faults.
type Segment struct {
	gen     uint64
	size    int
	f       *os.File
	mem     []byte       // the whole mapping, exactly as unix.Mmap returned it
	regions []RegionInfo // the layout: computed by Build, or parsed once by Open

	mu      sync.Mutex
	closed  bool
	retired bool  // Retire replaced the shared mapping with private zeros
	err     error // from the first Close
}

// Build creates the segment of the given generation holding regions, in the
// host. It validates the regions (non-empty, unique names of at most
// MaxNameLen bytes, Size > 0), lays out a header followed by each region at a
// multiple of RegionAlign, creates a memfd (close-on-exec, sealing allowed),
// sizes it, maps it shared, writes the header, runs each Region.Init in
// order, and seals the memfd against shrinking and growing (and against
// further seals), so that no process holding it can truncate it under a
// peer's mapping.
//
// The Segment keeps its own copy of the layout and never reads the header
// back: a child that scribbles on the header cannot mislead the host.
//
// If an Init panics, Build releases the segment and returns the panic as an
// error.
func Build(generation uint64, regions []Region) (*Segment, error) {
	infos, hlen, total, err := layout(regions)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("bgworker-shm-gen%d", generation)
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shmactor: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		f.Close()
		return nil, fmt.Errorf("shmactor: ftruncate to %d bytes: %w", total, err)
	}
	mem, err := unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shmactor: mmap %d bytes: %w", total, err)
	}
	fail := func(err error) (*Segment, error) {
		unix.Munmap(mem)
		f.Close()
		return nil, err
	}
	writeHeader(mem, generation, hlen, total, infos)
	for i, r := range regions {
		if r.Init == nil {
			continue
		}
		ri := infos[i]
		if v := runInit(r.Init, mem[ri.Offset:ri.Offset+ri.Size:ri.Offset+ri.Size]); v != nil {
			return fail(fmt.Errorf("shmactor: region %q: init panicked: %v", r.Name, *v))
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		return fail(fmt.Errorf("shmactor: seal memfd: %w", err))
	}
	return &Segment{gen: generation, size: total, f: f, mem: mem, regions: infos}, nil
}

// requiredSeals are the seals Build applies and Open insists on.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// runInit runs init on mem and returns what it panicked with, if it did.
func runInit(init func([]byte), mem []byte) (panicked *any) {
	defer func() {
		if v := recover(); v != nil {
			panicked = &v
		}
	}()
	init(mem)
	return nil
}

// Open maps, in a child, the segment whose memfd is f (typically
// os.NewFile(3, ...) when the host passed [Segment.File] as the first of
// exec.Cmd.ExtraFiles). It checks that the memfd is sealed against shrinking
// and growing, so that no peer can truncate it under the mapping (which would
// turn our accesses into SIGBUS), maps it shared and validates the header
// strictly: a corrupt header is an error, never a panic.
//
// On success the Segment owns f and Close closes it. On error f is left open
// and the caller still owns it.
func Open(f *os.File) (*Segment, error) {
	if f == nil {
		return nil, errors.New("shmactor: open: nil file")
	}
	fd := int(f.Fd())
	// Seals first: once they are in place the size cannot change between
	// the fstat and the mmap.
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("shmactor: open %s: get seals (not a memfd?): %w", f.Name(), err)
	}
	if seals&requiredSeals != requiredSeals {
		return nil, fmt.Errorf("shmactor: open %s: seals %#x lack shrink, grow or seal (%#x)", f.Name(), seals, requiredSeals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shmactor: open %s: fstat: %w", f.Name(), err)
	}
	if st.Size < PageSize || st.Size%PageSize != 0 || st.Size > MaxSegmentSize {
		return nil, fmt.Errorf("shmactor: open %s: size %d is not a whole number of pages up to %d", f.Name(), st.Size, int64(MaxSegmentSize))
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shmactor: open %s: mmap: %w", f.Name(), err)
	}
	gen, infos, err := parseHeader(mem)
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("shmactor: open %s: %w", f.Name(), err)
	}
	return &Segment{gen: gen, size: len(mem), f: f, mem: mem, regions: infos}, nil
}

// Generation returns the generation the segment was built for.
func (s *Segment) Generation() uint64 { return s.gen }

// Size returns the size of the segment in bytes, header included.
func (s *Segment) Size() int { return s.size }

// File returns the segment's memfd, to pass to a child (exec.Cmd.ExtraFiles).
// The Segment owns it: do not close it.
func (s *Segment) File() *os.File { return s.f }

// Region returns the memory of the named region, with its capacity limited to
// its size. The error wraps ErrNoRegion if there is no such region, and is
// ErrClosed after Close.
func (s *Segment) Region(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.retired {
		return nil, ErrRetired
	}
	for _, ri := range s.regions {
		if ri.Name == name {
			end := ri.Offset + ri.Size
			return s.mem[ri.Offset:end:end], nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoRegion, name)
}

// Regions returns the layout, in ascending offset order.
func (s *Segment) Regions() []RegionInfo {
	return append([]RegionInfo(nil), s.regions...)
}

// Retire gives the segment's shared memory back while keeping its
// addresses valid: the shared mapping is replaced, in place, by private
// zero-filled memory of the same size, and the memfd is closed. Slices
// taken from Region before remain safe to use until Close (they read
// zeros, and what is written to them is private and freed by Close), so
// host code that still holds a retired generation does not fault; Region
// fails with ErrRetired from then on. Close unmaps it: touching it after
// that faults. Once the children that mapped the segment are gone, its
// pages are freed. The private memory costs nothing until it is written.
//
// Retire is idempotent, and a no-op after Close.
func (s *Segment) Retire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.retired {
		return nil
	}
	s.retired = true
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(unsafe.SliceData(s.mem)), uintptr(len(s.mem)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED|unix.MAP_NORESERVE)
	if err != nil {
		// The shared mapping is still in place; it is unmapped by Close.
		err = fmt.Errorf("shmactor: retire generation %d: remap: %w", s.gen, err)
	}
	if cerr := s.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("shmactor: retire generation %d: close memfd: %w", s.gen, cerr)
	}
	return err
}

// Retired reports whether Retire has run.
func (s *Segment) Retired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retired
}

// Close unmaps the segment and closes the memfd. It is idempotent: later
// calls return the first call's result. Children that mapped the segment keep
// their own mappings; the memory is freed when the last one goes.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.err
	}
	s.closed = true
	if err := unix.Munmap(s.mem); err != nil {
		s.err = fmt.Errorf("shmactor: munmap: %w", err)
	}
	s.mem = nil
	if s.retired {
		return s.err // the memfd was closed by Retire
	}
	if err := s.f.Close(); err != nil && s.err == nil {
		s.err = fmt.Errorf("shmactor: close memfd: %w", err)
	}
	return s.err
}

// Adopt maps, in the host, a segment that an earlier image of this same
// process built (an in-place upgrade hands the memfd across exec), with the
// layout that image computed: like Build's segment, and unlike Open's, it
// never trusts the header that children can write to. It checks the seals
// and that the memfd's size is size. On success the Segment owns f.
func Adopt(f *os.File, generation uint64, size int, layout []RegionInfo) (*Segment, error) {
	if f == nil {
		return nil, errors.New("shmactor: adopt: nil file")
	}
	fd := int(f.Fd())
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("shmactor: adopt: get seals (not a memfd?): %w", err)
	}
	if seals&requiredSeals != requiredSeals {
		return nil, fmt.Errorf("shmactor: adopt: seals %#x lack shrink, grow or seal", seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shmactor: adopt: fstat: %w", err)
	}
	if st.Size != int64(size) {
		return nil, fmt.Errorf("shmactor: adopt: the memfd has %d bytes, the layout %d", st.Size, size)
	}
	for _, r := range layout {
		if r.Offset < 0 || r.Size <= 0 || r.Offset+r.Size > size {
			return nil, fmt.Errorf("shmactor: adopt: region %q [%d, %d) outside the %d bytes", r.Name, r.Offset, r.Offset+r.Size, size)
		}
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shmactor: adopt: mmap: %w", err)
	}
	return &Segment{gen: generation, size: size, f: f, mem: mem, regions: append([]RegionInfo(nil), layout...)}, nil
}
