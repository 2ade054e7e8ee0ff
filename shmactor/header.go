package shmactor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"unicode/utf8"
)

// The segment header occupies the first page(s) of a segment. It lets a
// child find the regions; the host never reads it back (it keeps the layout
// it computed), because any process that maps the segment can scribble on it.
//
//	off  size  field
//	  0     8  magic "bgwshm\x00\x01"
//	  8     4  layout version (headerVersion)
//	 12     4  header length in bytes (a multiple of PageSize)
//	 16     8  generation
//	 24     8  segment size in bytes
//	 32     4  number of regions
//	 36     4  CRC-32C of the header (header length bytes, this field as zero)
//	 40    24  reserved, zero
//	 64  64*n  region table, one 64-byte entry per region:
//	              0   1  name length (1..MaxNameLen)
//	              1  47  name, zero padded
//	             48   8  offset from the segment start
//	             56   8  size in bytes
//
// All integers are little-endian.
const (
	headerMagic   = "bgwshm\x00\x01"
	headerVersion = 1

	offMagic       = 0
	offVersion     = 8
	offHeaderLen   = 12
	offGeneration  = 16
	offTotal       = 24
	offCount       = 32
	offChecksum    = 36
	offReserved    = 40
	tableStart     = 64
	entryLen       = 64
	entryNameOff   = 1
	entryOffsetOff = entryNameOff + MaxNameLen // 48
	entrySizeOff   = 56
)

const (
	// PageSize is the granularity of a segment: its header and its total size
	// are rounded up to it.
	PageSize = 4096

	// RegionAlign is the alignment of every region's offset in a segment: a
	// cache line, so that regions never share one, and enough for any atomic.
	RegionAlign = 64

	// MaxNameLen is the longest region name, in bytes.
	MaxNameLen = 47

	// MaxSegmentSize bounds the size of a segment, as a sanity check on both
	// the requested regions and a header read from a file.
	MaxSegmentSize = 1 << 40
)

// castagnoli builds the CRC table on first use rather than at package init:
// every child process of the host binary runs this package's init, and only
// shared-memory workers need the table.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// errCorruptHeader is wrapped by every header validation error.
var errCorruptHeader = errors.New("shmactor: corrupt segment header")

// headerLen returns the header length for n regions.
func headerLen(n int) int {
	return roundUp(tableStart+entryLen*n, PageSize)
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// validName reports why name cannot be a region name, or "" if it can.
func validName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > MaxNameLen:
		return fmt.Sprintf("name longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(name):
		return "name is not valid UTF-8"
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return "name contains a NUL byte"
		}
	}
	return ""
}

// layout validates regions and computes their offsets and the segment size.
func layout(regions []Region) (infos []RegionInfo, hlen, total int, err error) {
	seen := make(map[string]bool, len(regions))
	hlen = headerLen(len(regions))
	off := hlen
	infos = make([]RegionInfo, 0, len(regions))
	for i, r := range regions {
		if why := validName(r.Name); why != "" {
			return nil, 0, 0, fmt.Errorf("shmactor: region %d (%q): %s", i, r.Name, why)
		}
		if seen[r.Name] {
			return nil, 0, 0, fmt.Errorf("shmactor: region %q: duplicate name", r.Name)
		}
		seen[r.Name] = true
		if r.Size <= 0 {
			return nil, 0, 0, fmt.Errorf("shmactor: region %q: size %d, want > 0", r.Name, r.Size)
		}
		if r.Size > MaxSegmentSize-off {
			return nil, 0, 0, fmt.Errorf("shmactor: region %q: size %d: segment larger than %d bytes", r.Name, r.Size, MaxSegmentSize)
		}
		infos = append(infos, RegionInfo{Name: r.Name, Offset: off, Size: r.Size})
		off = roundUp(off+r.Size, RegionAlign)
	}
	total = roundUp(off, PageSize)
	if total > MaxSegmentSize {
		return nil, 0, 0, fmt.Errorf("shmactor: segment larger than %d bytes", MaxSegmentSize)
	}
	return infos, hlen, total, nil
}

// writeHeader encodes the header into mem, which is zeroed.
func writeHeader(mem []byte, gen uint64, hlen, total int, infos []RegionInfo) {
	le := binary.LittleEndian
	copy(mem[offMagic:], headerMagic)
	le.PutUint32(mem[offVersion:], headerVersion)
	le.PutUint32(mem[offHeaderLen:], uint32(hlen))
	le.PutUint64(mem[offGeneration:], gen)
	le.PutUint64(mem[offTotal:], uint64(total))
	le.PutUint32(mem[offCount:], uint32(len(infos)))
	for i, ri := range infos {
		e := mem[tableStart+i*entryLen:][:entryLen]
		e[0] = byte(len(ri.Name))
		copy(e[entryNameOff:entryOffsetOff], ri.Name)
		le.PutUint64(e[entryOffsetOff:], uint64(ri.Offset))
		le.PutUint64(e[entrySizeOff:], uint64(ri.Size))
	}
	le.PutUint32(mem[offChecksum:], headerChecksum(mem[:hlen]))
}

// headerChecksum returns the CRC-32C of hdr with its checksum field as zero.
func headerChecksum(hdr []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli(), hdr[:offChecksum])
	c = crc32.Update(c, castagnoli(), zero[:])
	return crc32.Update(c, castagnoli(), hdr[offChecksum+4:])
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorruptHeader}, args...)...)
}

// parseHeader validates and decodes the header at the start of mem, the whole
// mapped segment. It copies the header first so that a process scribbling on
// the segment concurrently cannot change it between checks. It never panics:
// every offset and size is bounds-checked against len(mem).
func parseHeader(mem []byte) (gen uint64, infos []RegionInfo, err error) {
	le := binary.LittleEndian
	if len(mem) < PageSize {
		return 0, nil, corrupt("segment of %d bytes is smaller than a page", len(mem))
	}
	if string(mem[offMagic:offMagic+len(headerMagic)]) != headerMagic {
		return 0, nil, corrupt("bad magic %q", mem[offMagic:offMagic+len(headerMagic)])
	}
	if v := le.Uint32(mem[offVersion:]); v != headerVersion {
		return 0, nil, corrupt("layout version %d, want %d", v, headerVersion)
	}
	hl := uint64(le.Uint32(mem[offHeaderLen:]))
	if hl < PageSize || hl%PageSize != 0 || hl > uint64(len(mem)) {
		return 0, nil, corrupt("header length %d out of range for a %d-byte segment", hl, len(mem))
	}
	hdr := make([]byte, hl)
	copy(hdr, mem)
	if got, want := headerChecksum(hdr), le.Uint32(hdr[offChecksum:]); got != want {
		return 0, nil, corrupt("checksum %#08x, want %#08x", got, want)
	}
	for _, b := range hdr[offReserved:tableStart] {
		if b != 0 {
			return 0, nil, corrupt("reserved bytes not zero")
		}
	}
	if total := le.Uint64(hdr[offTotal:]); total != uint64(len(mem)) {
		return 0, nil, corrupt("header says %d bytes, segment has %d", total, len(mem))
	}
	n := uint64(le.Uint32(hdr[offCount:]))
	if n > (hl-tableStart)/entryLen || uint64(headerLen(int(n))) != hl {
		return 0, nil, corrupt("%d regions do not match a header of %d bytes", n, hl)
	}
	for _, b := range hdr[tableStart+n*entryLen:] {
		if b != 0 {
			return 0, nil, corrupt("bytes after the region table not zero")
		}
	}
	gen = le.Uint64(hdr[offGeneration:])
	infos = make([]RegionInfo, 0, n)
	seen := make(map[string]bool, n)
	end := hl // regions are laid out in ascending order, after the header
	for i := range n {
		e := hdr[tableStart+i*entryLen:][:entryLen]
		nl := int(e[0])
		if nl == 0 || nl > MaxNameLen {
			return 0, nil, corrupt("region %d: name length %d", i, nl)
		}
		for _, b := range e[entryNameOff+nl : entryOffsetOff] {
			if b != 0 {
				return 0, nil, corrupt("region %d: name padding not zero", i)
			}
		}
		name := string(e[entryNameOff : entryNameOff+nl])
		if why := validName(name); why != "" {
			return 0, nil, corrupt("region %d: %s", i, why)
		}
		if seen[name] {
			return 0, nil, corrupt("region %q: duplicate name", name)
		}
		seen[name] = true
		off, size := le.Uint64(e[entryOffsetOff:]), le.Uint64(e[entrySizeOff:])
		switch {
		case off%RegionAlign != 0:
			return 0, nil, corrupt("region %q: offset %d not %d-byte aligned", name, off, RegionAlign)
		case off < end:
			return 0, nil, corrupt("region %q: offset %d overlaps the header or the previous region (ends at %d)", name, off, end)
		case size == 0 || off > uint64(len(mem)) || size > uint64(len(mem))-off:
			return 0, nil, corrupt("region %q: [%d, +%d) outside the %d-byte segment", name, off, size, len(mem))
		}
		end = off + size
		infos = append(infos, RegionInfo{Name: name, Offset: int(off), Size: int(size)})
	}
	return gen, infos, nil
}
