package natsutil

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestParseAckReply(t *testing.T) {
	for _, c := range []struct {
		s    string
		want AckReply
		ok   bool
	}{
		{"$JS.ACK.STREAM.cons.1.42.7.1700000000.3", AckReply{42, 3, 1700000000}, true},
		{"$JS.ACK.dom.hash.STREAM.cons.1.42.7.1700000000.3.tok", AckReply{42, 3, 1700000000}, true},
		{"$JS.ACK.dom.hash.STREAM.cons.1.42.7.1700000000.3", AckReply{42, 3, 1700000000}, true}, // v2 without the token
		{"$JS.ACK.S.C.1.1234567890123456789.1.1.7", AckReply{1234567890123456789, 7, 1}, true},
		{"$JS.ACK.STREAM.cons.1.x.7.1700000000.3", AckReply{}, false},
		{"$JS.ACK.S.C.1..1.1.0", AckReply{}, false},                     // empty
		{"$JS.ACK.S.C.1.12345678901234567890.1.1.0", AckReply{}, false}, // 20 digits
		{"$JS.ACK.S.C.1.5.1.1x.0", AckReply{}, false},                   // not digits
		{"nope", AckReply{}, false},
		{"$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m.n", AckReply{}, false},
	} {
		got, ok := ParseAckReply(c.s)
		if got != c.want || ok != c.ok {
			t.Errorf("%q: got %+v %v, want %+v %v", c.s, got, ok, c.want, c.ok)
		}
	}
}

// FuzzParseAckReply: wherever the client's own parser reads a reply
// subject, ParseAckReply reads the same numbers.
func FuzzParseAckReply(f *testing.F) {
	f.Add("$JS.ACK.STREAM.cons.1.42.7.1700000000.3")
	f.Add("$JS.ACK.dom.hash.STREAM.cons.1.42.7.1700000000.3.tok")
	f.Add("$JS.ACK.S.C.1..1.1.0")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseAckReply(s)
		md, err := (&nats.Msg{Reply: s, Sub: &nats.Subscription{}}).Metadata()
		if err != nil || !ok {
			return // the client accepts some forms (a bare domain) we do not need, and we reject what it reads loosely
		}
		if got.StreamSeq != md.Sequence.Stream || got.Pending != md.NumPending || got.Timestamp != md.Timestamp.UnixNano() {
			t.Errorf("%q: got %+v, client %d %d %d", s, got, md.Sequence.Stream, md.NumPending, md.Timestamp.UnixNano())
		}
	})
}

func BenchmarkParseAckReply(b *testing.B) {
	const s = "$JS.ACK.STACKLENS_EVENTS.stacklens_projections_events.1.4242424.4242000.1764672000123456789.1234"
	b.Run("ParseAckReply", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := ParseAckReply(s); !ok {
				b.Fatal("not parsed")
			}
		}
	})
	b.Run("client Metadata", func(b *testing.B) {
		b.ReportAllocs()
		m := &nats.Msg{Reply: s, Sub: &nats.Subscription{}} // bound, as a delivered message is
		for b.Loop() {
			if _, err := m.Metadata(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
