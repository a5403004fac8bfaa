package bridge

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestStreamBytesPerEvent (STACKLENS_BENCH=1) measures what an event
// costs in STACKLENS_EVENTS, with and without S2 compression
// (NATS_COMPRESSION): loadgen events built into stream messages by the
// bridge's messageBuilder (its subject and headers) and published in the
// bridge's atomic batches with their checkpoints. It reports the stream's
// logical bytes (StreamInfo State.Bytes, what EVENTS_MAX_BYTES counts) and
// the bytes on disk per event against the original message, and the cost
// of each header (docs/PERFORMANCE.md, "Bytes per event").
// STACKLENS_BENCH_EVENTS sets the number of events (default 300000; the
// server compresses a message block when it is full, so the count must
// span many blocks).
func TestStreamBytesPerEvent(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1")
	}
	n := 300_000
	if s := os.Getenv("STACKLENS_BENCH_EVENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const partitions, perBatch = 8, 500
	start := time.Now().Add(-time.Minute)
	gen := loadgen.NewGenerator(1, 12, start)
	type kmsg struct{ key, value []byte }
	msgs := make([]kmsg, n)
	var orig int
	for i := range msgs {
		v, ev := gen.Next(nil, start.Add(time.Duration(i)*time.Millisecond))
		msgs[i] = kmsg{[]byte(ev.Service), v}
		orig += len(v)
	}
	origPer := float64(orig) / float64(n)
	lim := event.Limits{MaxBytes: 1 << 20, MaxFutureSkew: time.Hour}

	for _, comp := range []string{"none", "s2"} {
		ns := testenv.NATS(t)
		js := ns.JetStream(t)
		ctx := testenv.Context(t)
		st, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Replicas: 1, Shards: 16, EventsMaxAge: 24 * time.Hour,
			DLQMaxAge: 24 * time.Hour, Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		builders := make([]*messageBuilder, partitions)
		prev := make([]uint64, partitions)
		for p := range builders {
			builders[p] = newMessageBuilder("stacklens-analytics", p, 16, lim)
		}
		offsets := make([]int64, partitions)
		var sample *nats.Msg
		for i := 0; i < n; i += perBatch {
			p := (i / perBatch) % partitions
			b := &batch{first: offsets[p]}
			for _, m := range msgs[i:min(i+perBatch, n)] {
				km := &kafka.Message{Topic: "stacklens-analytics", Partition: p, Offset: offsets[p], Key: m.key,
					Value: m.value, Time: start.Add(time.Duration(i) * time.Millisecond)}
				offsets[p]++
				msg, reason := builders[p].build(km, time.Now())
				if reason != "" {
					t.Fatalf("event %d dead-lettered: %s", i, reason)
				}
				if sample == nil {
					sample = msg
				}
				b.msgs = append(b.msgs, msg)
			}
			b.last = offsets[p] - 1
			b.msgs = append(b.msgs, checkpointMsg(natsutil.OffsetSubject("stacklens-analytics", p), Checkpoint{
				V: checkpointVersion, Topic: "stacklens-analytics", Partition: p, Offset: b.last, Time: time.Now().UTC()}))
			if prev[p], err = sendBatch(ctx, js, b, prev[p], 30*time.Second); err != nil {
				t.Fatalf("batch at %d: %v", i, err)
			}
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(ns.StoreDir, "jetstream", "$G", "streams", natsutil.StreamEvents)
		disk, tail := dirBytes(t, dir)
		logicalPer := float64(info.State.Bytes) / float64(info.State.Msgs)
		// The server compresses a block when the next one starts, so the
		// last block is stored as written: the figure of the closed blocks
		// leaves it out (its messages estimated at the logical size).
		closedPer := float64(disk-tail) / (float64(info.State.Msgs) - float64(tail)/logicalPer)
		t.Logf("NATS_COMPRESSION=%s: %d events (+%d checkpoints kept) of %.1f B; logical %.1f B/event (%.2f×); disk %.1f B/event (%.2f×) over all files, %.1f B/event (%.2f×) over closed blocks",
			comp, n, int(info.State.Msgs)-n, origPer, logicalPer, logicalPer/origPer,
			float64(disk)/float64(n), float64(disk)/float64(n)/origPer, closedPer, closedPer/origPer)
		if comp == "s2" && closedPer > 2*origPer {
			t.Errorf("S2: %.1f B per event on disk, more than 2× the %.1f-B message", closedPer, origPer)
		}
		if comp == "none" {
			stored, err := st.GetMsg(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range stored.Header {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			var parts []string
			total := len("NATS/1.0\r\n\r\n")
			for _, k := range keys {
				c := len(k) + 2 + len(stored.Header.Get(k)) + 2
				total += c
				parts = append(parts, k+"="+strconv.Itoa(c))
			}
			t.Logf("stored headers of an event: %s; header block %d B, subject %q %d B, message %d B (record overhead per message ~22 B)",
				strings.Join(parts, " "), total, stored.Subject, len(stored.Subject), len(stored.Data))
		}
	}
}

// dirBytes sums the sizes of the files under dir, and returns the size of
// the newest message block (the highest-numbered msgs/*.blk) as tail.
func dirBytes(t *testing.T, dir string) (total, tail int64) {
	t.Helper()
	last := -1
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		if name, ok := strings.CutSuffix(d.Name(), ".blk"); ok {
			if k, err := strconv.Atoi(name); err == nil && k > last {
				last, tail = k, fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, tail
}
