// Package codec serialises the messages that cross the process bridge. A
// message is carried as a type name and a payload. Protocol buffers are
// found by their full name in the global protobuf registry; other Go types
// must be registered (RegisterJSON, or a type implementing
// encoding.BinaryMarshaler and BinaryUnmarshaler). []byte and string are
// built in and take a copy-free fast path. Anything else is an error at the
// sender, never a silent drop.
package codec

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"

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
		return append([]byte(nil), payload...), nil
	case TypeString:
		return string(payload), nil
	}
	reg.RLock()
	e := reg.byName[name]
	reg.RUnlock()
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
