package bridge

import (
	"bytes"
	"testing"
)

// FuzzParseFast checks the hot-path parser against the full one: for any
// kind and body, parseFast either declines or returns exactly what
// parseMessage returns without error.
func FuzzParseFast(f *testing.F) {
	for _, fr := range allFrames() {
		f.Add(fr[4], fr[HeaderLen:])
	}
	f.Add(byte(KindResponse), []byte{1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0})
	f.Add(byte(KindRequest), []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1})
	f.Add(byte(KindTell), []byte{0, 0, 5, 0, 'b', 'y', 't', 'e', 's', 1, 2, 3})
	f.Add(byte(KindTell), []byte{0, 0, 5, 0, 'b', 'y', 't', 'e'})
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		k := Kind(kind)
		var fast Message
		ok := fast.parseFast(k, body)
		slow, err := parseMessage(k, body)
		if !ok {
			return // the slow parser decides (and is fuzzed by FuzzParseMessage)
		}
		if err != nil {
			t.Fatalf("parseFast accepted a %v body that parseMessage rejects: %v", k, err)
		}
		if fast.Kind != slow.Kind || fast.ID != slow.ID || fast.Status != slow.Status ||
			!bytes.Equal(fast.Target, slow.Target) || (fast.Target == nil) != (slow.Target == nil) ||
			!bytes.Equal(fast.Type, slow.Type) || !bytes.Equal(fast.Payload, slow.Payload) {
			t.Fatalf("parseFast = %+v, parseMessage = %+v", fast, slow)
		}
	})
}

// TestParseFastWellFormed: every well-formed message frame takes the fast
// path.
func TestParseFastWellFormed(t *testing.T) {
	for _, fr := range allFrames() {
		k := Kind(fr[4])
		if k != KindTell && k != KindRequest && k != KindResponse {
			continue
		}
		var m Message
		if !m.parseFast(k, fr[HeaderLen:]) {
			t.Errorf("parseFast declined a well-formed %v frame % x", k, fr)
		}
	}
}
