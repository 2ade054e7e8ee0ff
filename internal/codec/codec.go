// Package codec serialises the messages that cross the process bridge. A
// message is carried as a type name and a payload. Protocol buffers are
// found by their full name in the global protobuf registry; other Go types
// must be registered with Register (sent as JSON, or in binary form when the
// type implements encoding.BinaryMarshaler and BinaryUnmarshaler). []byte
// and string are
// built in and take a copy-free fast path. Anything else is an error at the
// sender, never a silent drop. A receiver that has the type name as bytes
// (in a frame) decodes with DecodeBytes, or with a Decoder, which also
// saves allocations for many small []byte messages.
package codec

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Built-in type names.
const (
	TypeBytes  = "bytes"
	TypeString = "string"
)

// ErrUnknownType is wrapped by errors for a message type that has no codec.
var ErrUnknownType = errors.New("codec: no codec for message type")

type entry struct {
	name   string
	typ    reflect.Type // pointer or value type as registered
	binary bool         // uses encoding.Binary(Un)Marshaler
}

var reg struct {
	sync.RWMutex
	byType map[reflect.Type]*entry
	byName map[string]*entry
}

// Name returns the wire name of a Go type: its package path and name.
func Name(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() + "." + t.Name()
}

// Register adds the Go type of sample (a struct value or pointer) so that
// values of that type (and pointers to it) can cross the bridge: with
// MarshalBinary/UnmarshalBinary when *T implements them, as JSON otherwise.
// Registering a type twice is a no-op. It returns an error for types that
// cannot have a stable name (unnamed types).
func Register(sample any) error {
	t := reflect.TypeOf(sample)
	if t == nil {
		return errors.New("codec: Register(nil)")
	}
	base := t
	for base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	if base.Name() == "" {
		return fmt.Errorf("codec: type %v has no name", t)
	}
	ptr := reflect.PointerTo(base)
	_, bm := reflect.New(base).Interface().(encoding.BinaryMarshaler)
	_, bu := reflect.New(base).Interface().(encoding.BinaryUnmarshaler)
	e := &entry{name: Name(base), typ: t, binary: bm && bu}
	reg.Lock()
	defer reg.Unlock()
	if reg.byType == nil {
		reg.byType = map[reflect.Type]*entry{}
		reg.byName = map[string]*entry{}
	}
	if old, ok := reg.byName[e.name]; ok {
		if old.typ != t && old.typ != ptr && old.typ != base {
			return fmt.Errorf("codec: name %s already registered for %v", e.name, old.typ)
		}
		reg.byType[t] = old
		return nil
	}
	reg.byName[e.name] = e
	reg.byType[base] = e
	reg.byType[ptr] = e
	return nil
}

// Encode appends msg's payload to dst and returns its type name.
func Encode(dst []byte, msg any) (string, []byte, error) {
	switch m := msg.(type) {
	case []byte:
		return TypeBytes, append(dst, m...), nil
	case string:
		return TypeString, append(dst, m...), nil
	case proto.Message:
		out, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
		if err != nil {
			return "", dst, fmt.Errorf("codec: protobuf %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		return string(m.ProtoReflect().Descriptor().FullName()), out, nil
	}
	t := reflect.TypeOf(msg)
	reg.RLock()
	e := reg.byType[t]
	reg.RUnlock()
	if e == nil {
		return "", dst, fmt.Errorf("%w %v: register it with actors.RegisterMessage", ErrUnknownType, t)
	}
	if e.binary {
		v := msg
		if t.Kind() != reflect.Pointer {
			p := reflect.New(t)
			p.Elem().Set(reflect.ValueOf(msg))
			v = p.Interface()
		}
		b, err := v.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return "", dst, fmt.Errorf("codec: %s: %w", e.name, err)
		}
		return e.name, append(dst, b...), nil
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return "", dst, fmt.Errorf("codec: %s: %w", e.name, err)
	}
	return e.name, append(dst, b...), nil
}

// Decode rebuilds a message from its type name and payload. It never keeps
// a reference to payload. Registered types decode to the type that was
// registered (a pointer if a pointer was registered).
func Decode(name string, payload []byte) (any, error) {
	switch name {
	case TypeBytes:
		return bytesCopy(payload), nil
	case TypeString:
		return string(payload), nil
	}
	reg.RLock()
	e := reg.byName[name]
	reg.RUnlock()
	return decodeNamed(e, name, payload)
}

// DecodeBytes is Decode with the type name as bytes, as it lies in a
// frame: looking it up allocates nothing, so a built-in or registered type
// costs no conversion of its name.
func DecodeBytes(name, payload []byte) (any, error) {
	switch string(name) {
	case TypeBytes:
		return boxedBytesCopy(payload), nil
	case TypeString:
		return string(payload), nil
	}
	reg.RLock()
	e := reg.byName[string(name)]
	reg.RUnlock()
	return decodeNamed(e, string(name), payload)
}

// bytesCopy copies a []byte payload (nil when empty).
func bytesCopy(payload []byte) []byte {
	if len(payload) == 0 {
		return nil
	}
	b := make([]byte, len(payload))
	copy(b, payload)
	return b
}

// boxedBytesCopy returns a copy of payload as an interface value holding a
// []byte, like any(bytesCopy(payload)), in one allocation instead of two.
func boxedBytesCopy(payload []byte) any {
	if len(payload) == 0 {
		return []byte(nil) // no allocation: a nil slice boxes to a shared zero value
	}
	return boxBytes(make([]byte, boxSize(len(payload))), payload)
}

// sliceHeader is the size of a slice header.
const sliceHeader = int(unsafe.Sizeof([]byte(nil)))

// boxSize is the room boxBytes needs for an n-byte payload: the slice
// header, then the bytes, rounded up to keep the next header aligned.
func boxSize(n int) int { return (sliceHeader + n + 7) &^ 7 }

// boxBytes copies payload into mem (boxSize(len(payload)) bytes of a
// pointer-free block, 8-byte aligned) and returns an interface value
// holding a []byte of the copy. The interface points to a slice header at
// the start of mem, which describes the bytes after it, capped at their
// length so that an append by the receiver copies rather than writing past
// them. The header's pointer into its own block needs no scanning by the
// garbage collector: whoever holds the interface or the slice holds a
// pointer into that block, which keeps all of it alive.
func boxBytes(mem, payload []byte) any {
	n := len(payload)
	data := mem[sliceHeader : sliceHeader+n : sliceHeader+n]
	copy(data, payload)
	*(*[]byte)(unsafe.Pointer(&mem[0])) = data
	var v any = []byte(nil)
	(*eface)(unsafe.Pointer(&v)).data = unsafe.Pointer(&mem[0])
	return v
}

// A Decoder is DecodeBytes for one goroutine that decodes many messages,
// such as a bridge's reader: it carves small []byte messages out of shared
// blocks, one allocation for many messages. The price is that a small
// message kept alive keeps its block (4 KiB at most) alive too. The zero
// value is ready to use; a Decoder must not be used concurrently.
type Decoder struct {
	block []byte // unused rest of the current block, 8-byte aligned
}

const (
	// decoderBlock is the size of a Decoder's shared blocks.
	decoderBlock = 4 << 10
	// decoderSmall is the largest box carved out of a shared block; a
	// larger payload gets an allocation of its own.
	decoderSmall = 256
)

// Decode is DecodeBytes.
func (d *Decoder) Decode(name, payload []byte) (any, error) {
	if string(name) != TypeBytes || len(payload) == 0 {
		return DecodeBytes(name, payload)
	}
	size := boxSize(len(payload))
	if size > decoderSmall {
		return boxBytes(make([]byte, size), payload), nil
	}
	if len(d.block) < size {
		d.block = make([]byte, decoderBlock)
	}
	mem := d.block[:size:size]
	d.block = d.block[size:]
	return boxBytes(mem, payload), nil
}

// eface is the layout of an empty interface value: type word, data word.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

// decodeNamed decodes a payload of a registered type (e) or, when e is
// nil, a protocol buffer found by name.
func decodeNamed(e *entry, name string, payload []byte) (any, error) {
	if e != nil {
		base := e.typ
		for base.Kind() == reflect.Pointer {
			base = base.Elem()
		}
		p := reflect.New(base)
		var err error
		if e.binary {
			err = p.Interface().(encoding.BinaryUnmarshaler).UnmarshalBinary(payload)
		} else {
			err = json.Unmarshal(payload, p.Interface())
		}
		if err != nil {
			return nil, fmt.Errorf("codec: decode %s: %w", name, err)
		}
		if e.typ.Kind() == reflect.Pointer {
			return p.Interface(), nil
		}
		return p.Elem().Interface(), nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, name)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("codec: decode protobuf %s: %w", name, err)
	}
	return m, nil
}
