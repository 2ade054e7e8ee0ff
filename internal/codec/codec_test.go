package codec

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
)

type jsonMsg struct {
	A int
	B string
}

func init() {
	if err := Register(&jsonMsg{}); err != nil {
		panic(err)
	}
}

func TestDecodeBytesMatchesDecode(t *testing.T) {
	for _, msg := range []any{[]byte("payload"), "text", &jsonMsg{A: 1, B: "x"}} {
		name, payload, err := Encode(nil, msg)
		if err != nil {
			t.Fatalf("Encode(%T): %v", msg, err)
		}
		a, errA := Decode(name, payload)
		b, errB := DecodeBytes([]byte(name), payload)
		var d Decoder
		c, errC := d.Decode([]byte(name), payload)
		if errA != nil || errB != nil || errC != nil {
			t.Fatalf("%s: errors %v, %v, %v", name, errA, errB, errC)
		}
		for _, got := range []any{a, b, c} {
			switch want := msg.(type) {
			case []byte:
				if g, ok := got.([]byte); !ok || !bytes.Equal(g, want) {
					t.Errorf("%s decoded as %T %v", name, got, got)
				}
			case string:
				if got != want {
					t.Errorf("%s decoded as %T %v", name, got, got)
				}
			case *jsonMsg:
				if g, ok := got.(*jsonMsg); !ok || *g != *want {
					t.Errorf("%s decoded as %T %v", name, got, got)
				}
			}
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	var d Decoder
	for _, name := range []string{"", "no.such.Type", "bytes2"} {
		if _, err := DecodeBytes([]byte(name), []byte{1}); !errors.Is(err, ErrUnknownType) {
			t.Errorf("DecodeBytes(%q) error %v, want ErrUnknownType", name, err)
		}
		if _, err := d.Decode([]byte(name), []byte{1}); !errors.Is(err, ErrUnknownType) {
			t.Errorf("Decoder.Decode(%q) error %v, want ErrUnknownType", name, err)
		}
	}
}

func TestDecodeBytesNoAllocForName(t *testing.T) {
	name, payload := []byte(TypeString), []byte{}
	if n := testing.AllocsPerRun(100, func() { DecodeBytes(name, payload) }); n != 0 {
		t.Errorf("DecodeBytes of an empty string allocates %v times, want 0 (the name lookup must not)", n)
	}
}

// TestDecoderBoxes checks the []byte messages a Decoder carves out of
// shared blocks: each a copy, capped so that an append by its receiver
// cannot reach its neighbour, all intact across garbage collections while
// only the interface values keep them alive.
func TestDecoderBoxes(t *testing.T) {
	var d Decoder
	name := []byte(TypeBytes)
	var msgs []any
	var want [][]byte
	src := make([]byte, 600)
	for i := range 2000 {
		n := i % 300 // small (shared blocks), 0 (nil) and large (own allocation)
		if i%7 == 0 {
			n = 500
		}
		for j := range n {
			src[j] = byte(i + j)
		}
		m, err := d.Decode(name, src[:n])
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		want = append(want, bytes.Clone(src[:n]))
		clear(src) // the decoded copy must not alias the source
	}
	runtime.GC()
	runtime.GC()
	for i, m := range msgs {
		b, ok := m.([]byte)
		if !ok {
			t.Fatalf("message %d is %T", i, m)
		}
		if !bytes.Equal(b, want[i]) {
			t.Fatalf("message %d = %v, want %v", i, b, want[i])
		}
		if cap(b) != len(b) {
			t.Fatalf("message %d: cap %d, len %d; want cap == len", i, cap(b), len(b))
		}
		if len(b) == 0 && b != nil {
			t.Fatalf("message %d: empty but not nil", i)
		}
	}
	// Appending to one message must leave the next one alone.
	for i := range msgs {
		b := msgs[i].([]byte)
		_ = append(b, 0xEE, 0xEE, 0xEE, 0xEE)
	}
	for i, m := range msgs {
		if !bytes.Equal(m.([]byte), want[i]) {
			t.Fatalf("message %d changed after appends to its neighbours", i)
		}
	}
	runtime.KeepAlive(msgs)
}

func TestDecoderAllocs(t *testing.T) {
	var d Decoder
	name, payload := []byte(TypeBytes), make([]byte, 64)
	n := testing.AllocsPerRun(1000, func() { d.Decode(name, payload) })
	if n > 0.1 {
		t.Errorf("Decoder.Decode of a 64-byte []byte: %v allocations per message, want a shared block per many", n)
	}
}

func BenchmarkDecodeBytes64(b *testing.B) {
	name, payload := []byte(TypeBytes), make([]byte, 64)
	b.ReportAllocs()
	for range b.N {
		DecodeBytes(name, payload)
	}
}

func BenchmarkDecoder64(b *testing.B) {
	var d Decoder
	name, payload := []byte(TypeBytes), make([]byte, 64)
	b.ReportAllocs()
	for range b.N {
		d.Decode(name, payload)
	}
}
