package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestCheckpointRoundTrip(t *testing.T) {
	c := Checkpoint{Topic: "stacklens-analytics", Partition: 7, Offset: 12345, Count: 500,
		Time: time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)}
	got, err := decodeCheckpoint(encodeCheckpoint(c))
	if err != nil {
		t.Fatal(err)
	}
	c.V = checkpointVersion
	if got != c {
		t.Fatalf("got %+v, want %+v", got, c)
	}
}

func TestCheckpointDecodeErrors(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{}`, `{"v":1}`, `not json`,
		`{"v":2,"topic":"t","partition":0,"offset":1}`,
		`{"v":1,"topic":"","partition":0,"offset":1}`,
		`{"v":1,"topic":"t","partition":-1,"offset":1}`,
		`{"v":1,"topic":"t","partition":3000000000,"offset":1}`,
		`{"v":1,"topic":"t","partition":0,"offset":-1}`,
		`{"v":1,"topic":"t","partition":0,"offset":1,"count":-4}`,
		`{"v":1,"topic":"t","partition":0,"offset":1} {}`,
		`{"v":1,"topic":"t","partition":0,"offset":"1"}`,
	} {
		if c, err := decodeCheckpoint([]byte(in)); !errors.Is(err, errBadCheckpoint) {
			t.Errorf("%q: got %+v, %v; want errBadCheckpoint", in, c, err)
		}
	}
}

// FuzzCheckpointDecode: decoding never panics, and whatever decodes
// re-encodes to the same checkpoint.
func FuzzCheckpointDecode(f *testing.F) {
	f.Add(encodeCheckpoint(Checkpoint{Topic: "t", Partition: 1, Offset: 2, Count: 3, Time: time.Unix(5, 0).UTC()}))
	f.Add([]byte(`{"v":1,"topic":"a.b","partition":0,"offset":0}`))
	f.Add([]byte(`{"v":1,"topic":"t","partition":0,"offset":9223372036854775807,"extra":[1,2]}`))
	f.Add([]byte(`{"v":1,"topic":"t","partition":0,"offset":1e3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCheckpoint(data)
		if err != nil {
			if !errors.Is(err, errBadCheckpoint) {
				t.Fatalf("error %v is not errBadCheckpoint", err)
			}
			return
		}
		if c.Topic == "" || c.Partition < 0 || c.Offset < 0 || c.V != checkpointVersion {
			t.Fatalf("accepted invalid %+v", c)
		}
		c2, err := decodeCheckpoint(encodeCheckpoint(c))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !c2.Time.Equal(c.Time) {
			t.Fatalf("time %v != %v", c2.Time, c.Time)
		}
		c2.Time = c.Time
		if c2 != c {
			t.Fatalf("round trip %+v != %+v", c2, c)
		}
	})
}

// fakeLast is a checkpointReader returning a fixed message or error.
type fakeLast struct {
	m   *jetstream.RawStreamMsg
	err error
}

func (f fakeLast) GetLastMsgForSubject(context.Context, string) (*jetstream.RawStreamMsg, error) {
	return f.m, f.err
}

func TestReadCheckpoint(t *testing.T) {
	ctx := context.Background()
	good := checkpointMsg("s", Checkpoint{Topic: "t", Partition: 2, Offset: 41})
	cases := []struct {
		name    string
		r       fakeLast
		found   bool
		offset  int64
		wantErr bool
	}{
		{"none", fakeLast{err: jetstream.ErrMsgNotFound}, false, 0, false},
		{"error", fakeLast{err: errors.New("boom")}, false, 0, true},
		{"good", fakeLast{m: &jetstream.RawStreamMsg{Sequence: 9, Data: good.Data, Header: good.Header}}, true, 41, false},
		{"header fallback", fakeLast{m: &jetstream.RawStreamMsg{Sequence: 9, Data: []byte("x"),
			Header: nats.Header{natsutil.HdrKafkaOffset: {"17"}}}}, true, 17, false},
		{"corrupt", fakeLast{m: &jetstream.RawStreamMsg{Sequence: 9, Data: []byte("x"), Header: nats.Header{}}}, false, 0, true},
		{"other partition", fakeLast{m: &jetstream.RawStreamMsg{Sequence: 9,
			Data: encodeCheckpoint(Checkpoint{Topic: "t", Partition: 3, Offset: 1})}}, false, 0, true},
	}
	for _, tc := range cases {
		ck, err := readCheckpoint(ctx, tc.r, "s", "t", 2)
		if (err != nil) != tc.wantErr || ck.Found != tc.found || ck.Offset != tc.offset {
			t.Errorf("%s: got %+v, %v", tc.name, ck, err)
		}
		if tc.found && ck.Seq != 9 {
			t.Errorf("%s: seq %d", tc.name, ck.Seq)
		}
	}
	if h := good.Header.Get(jetstream.MsgRollup); h != jetstream.MsgRollupSubject {
		t.Errorf("checkpoint rollup header %q", h)
	}
	if !strings.Contains(string(good.Data), `"offset":41`) {
		t.Errorf("payload %s", good.Data)
	}
}
