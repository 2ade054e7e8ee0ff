package actors

import "github.com/bgworker/bgworker/internal/codec"

// RegisterMessage makes the Go type of sample (a named struct, or a pointer
// to one) able to cross the process bridge, in both directions. Call it
// from init() in the package that defines the type, so that the host and
// every child (the same binary) agree. A type whose pointer implements
// encoding.BinaryMarshaler and BinaryUnmarshaler is sent in that form;
// any other as JSON. Protocol buffer messages, []byte and string need no
// registration. Sending an unregistered type fails at the sender with an
// error naming the type.
func RegisterMessage(sample any) error { return codec.Register(sample) }
