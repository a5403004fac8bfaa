package bridge

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestNATSSyncCost (STACKLENS_BENCH=1) measures what the embedded
// server's fsync policy (NATS_SYNC_INTERVAL, docs/RUNBOOK.md "NATS
// durability") costs the bridge's writes: one partition publishing fenced
// atomic batches of STACKLENS_BENCH_BATCH (default 100) events plus the
// checkpoint, back to back for STACKLENS_BENCH_SECONDS (default 5) each,
// into a file-store stream, with the server default (2m) and with always.
// One partition publishing sequentially is the worst case: a bridge with
// many partitions overlaps batches (group commit) and amortises more.
func TestNATSSyncCost(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1")
	}
	size, secs := 100, 5
	if s := os.Getenv("STACKLENS_BENCH_BATCH"); s != "" {
		size, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("STACKLENS_BENCH_SECONDS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	cfg := testenv.Config(t, nil)
	payload := make([]byte, 300) // about the size of a seed event
	for i := range payload {
		payload[i] = 'x'
	}
	for _, mode := range []struct {
		name   string
		always bool
	}{{"2m (default)", false}, {"always", true}} {
		port, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if d := os.Getenv("STACKLENS_BENCH_DIR"); d != "" { // a specific disk
			if dir, err = os.MkdirTemp(d, "sync"); err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
		}
		srv, err := embedded.StartNATS(embedded.NATSOptions{Port: port, StoreDir: dir, SyncAlways: mode.always})
		if err != nil {
			t.Fatal(err)
		}
		if jc := srv.JetStreamConfig(); jc == nil || jc.SyncAlways != mode.always {
			t.Fatalf("server sync_always %v, want %v", jc, mode.always)
		}
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx := testenv.Context(t)
		if _, err := natsutil.EnsureEventsStream(ctx, js, cfg.NATS); err != nil {
			t.Fatal(err)
		}
		subject := natsutil.OffsetSubject(cfg.Kafka.InputTopic, 0)
		var prev uint64
		var lat []time.Duration
		events, off := 0, int64(0)
		end := time.Now().Add(time.Duration(secs) * time.Second)
		start := time.Now()
		for time.Now().Before(end) {
			b := &batch{first: off}
			for i := 0; i < size; i++ {
				b.msgs = append(b.msgs, &nats.Msg{Subject: natsutil.EventSubject(i%cfg.NATS.Shards, "svc"), Data: payload, Header: nats.Header{}})
			}
			off += int64(size)
			b.last = off - 1
			b.msgs = append(b.msgs, checkpointMsg(subject, Checkpoint{Topic: cfg.Kafka.InputTopic, Offset: b.last, Time: time.Now().UTC()}))
			t0 := time.Now()
			if prev, err = sendBatch(ctx, js, b, prev, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			events += size
		}
		el := time.Since(start)
		slices.Sort(lat)
		fmt.Printf("sync %-13s batch %d: %d batches, %.0f events/s, batch latency p50 %v p99 %v\n", mode.name, size, len(lat),
			float64(events)/el.Seconds(), lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond))
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}
