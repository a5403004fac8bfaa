package natsutil

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestSubjects(t *testing.T) {
	for got, want := range map[string]string{
		EventSubject(3, "a.b"):                   "stacklens.events.3.a_2Eb",
		EventSubject(3, "a_b"):                   "stacklens.events.3.a_5Fb",
		ShardFilter(15):                          "stacklens.events.15.>",
		OffsetSubject("stacklens-analytics", 11): "stacklens.offsets.stacklens-analytics.11",
		DLQSubject("bridge", "missing_field"):    "stacklens.dlq.bridge.missing_field",
		AggBucket("1min"):                        "stacklens_agg_1min",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if !strings.HasPrefix(DefaultName("bridge"), "stacklens-bridge@") {
		t.Error(DefaultName("bridge"))
	}
}

// TestDLQStreamProvisioned: provisioning the event stream provisions
// STACKLENS_DLQ with max age DLQ_MAX_AGE and the event stream's dead
// letters as its only source; a changed DLQ_MAX_AGE is applied and the
// copies already made are kept. Before, DLQ_MAX_AGE was read by nothing.
func TestDLQStreamProvisioned(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: 2 * time.Hour, DLQMaxAge: 720 * time.Hour}
	if _, err := EnsureEventsStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	dst, err := js.Stream(ctx, StreamDLQ)
	if err != nil {
		t.Fatalf("%s not provisioned with %s: %v", StreamDLQ, StreamEvents, err)
	}
	cfg := dst.CachedInfo().Config
	if cfg.MaxAge != 720*time.Hour || len(cfg.Subjects) != 0 || len(cfg.Sources) != 1 ||
		cfg.Sources[0].Name != StreamEvents || cfg.Sources[0].FilterSubject != DLQPrefix+">" || cfg.Storage != jetstream.FileStorage {
		t.Fatalf("%s config %+v", StreamDLQ, cfg)
	}
	if _, err := js.Publish(ctx, DLQSubject("bridge", "invalid_json"), []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, EventSubject(1, "x"), []byte("{}")); err != nil { // not copied
		t.Fatal(err)
	}
	copied := func() error {
		info, err := dst.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 1 {
			return fmt.Errorf("%s holds %d messages, want the dead letter only", StreamDLQ, info.State.Msgs)
		}
		return nil
	}
	testenv.Eventually(t, 10*time.Second, copied)
	c.DLQMaxAge = 48 * time.Hour
	if dst, err = EnsureDLQStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	if got := dst.CachedInfo().Config.MaxAge; got != 48*time.Hour {
		t.Errorf("DLQ_MAX_AGE change not applied: %v", got)
	}
	testenv.Eventually(t, 10*time.Second, copied)
}

func TestEnsureEventsStreamIsIdempotentAndGuardsShards(t *testing.T) {
	srv := testenv.NATS(t)
	js := srv.JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 16, EventsMaxAge: 168 * time.Hour}
	st, err := EnsureEventsStream(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowAtomicPublish || !cfg.AllowRollup || !cfg.AllowDirect || cfg.MaxAge != 168*time.Hour || len(cfg.Subjects) != 3 {
		t.Errorf("config %+v", cfg)
	}
	if _, err := js.Publish(ctx, EventSubject(1, "x"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.EventsMaxAge = 24 * time.Hour
	st, err = EnsureEventsStream(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if info.Config.MaxAge != 24*time.Hour || info.State.Msgs != 1 {
		t.Errorf("update lost data or did not apply: %+v %+v", info.Config.MaxAge, info.State)
	}
	c.Shards = 8
	if _, err := EnsureEventsStream(ctx, js, c); !errors.Is(err, ErrShardsChanged) {
		t.Errorf("changing SHARDS: %v", err)
	}
	kv, err := EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: ProcessorBucket, History: 1})
	if err != nil || kv.Bucket() != ProcessorBucket {
		t.Fatal(err)
	}
	if _, err := EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "bad bucket"}); err == nil {
		t.Error("invalid bucket name accepted")
	}
}

func TestConnectWithAuth(t *testing.T) {
	port, _ := embedded.FreePort()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, Users: []*server.User{{Username: "svc", Password: "pw"}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	defer s.Shutdown()
	ctx := testenv.Context(t)
	log := telemetry.Discard()
	nc, err := Connect(ctx, config.NATS{URL: s.ClientURL(), User: "svc", Password: "pw"}, "t", log)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := Connect(short, config.NATS{URL: s.ClientURL(), User: "svc", Password: "wrong"}, "t", log); err == nil {
		t.Error("wrong password connected")
	}
	if _, err := Options(config.NATS{NKeySeedFile: "/nonexistent"}, "t", log); err == nil {
		t.Error("missing nkey seed accepted")
	}
	for _, c := range []config.NATS{{Token: "tok"}, {CredsFile: "/x.creds"}, {TLSCAFile: "/ca.pem", TLSCertFile: "/c.pem", TLSKeyFile: "/k.pem"}} {
		if opts, err := Options(c, "t", log); err != nil || len(opts) == 0 {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestConnectionSurvivesServerRestart(t *testing.T) {
	srv := testenv.NATS(t)
	ctx := testenv.Context(t)
	nc, err := Connect(ctx, config.NATS{URL: srv.URL}, "t", telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Restart()
	testenv.Eventually(t, 20*time.Second, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected")
		}
		return nc.Publish("x", nil)
	})
	if nc.Stats().Reconnects == 0 {
		t.Error("no reconnect recorded")
	}
}

// TestStreamsBoundedAndCompressed: both streams get NATS_COMPRESSION and
// their byte bounds (0: none, JetStream's -1), and a change of either is
// applied to existing streams on the next provisioning, keeping their data.
func TestStreamsBoundedAndCompressed(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: 2 * time.Hour, DLQMaxAge: 720 * time.Hour, Compression: "s2"}
	check := func(events, dlq int64, comp jetstream.StoreCompression) {
		t.Helper()
		for name, want := range map[string]int64{StreamEvents: events, StreamDLQ: dlq} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if cfg.MaxBytes != want || cfg.Compression != comp {
				t.Errorf("%s: max bytes %d compression %v, want %d %v", name, cfg.MaxBytes, cfg.Compression, want, comp)
			}
		}
	}
	if _, err := EnsureEventsStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	check(-1, -1, jetstream.S2Compression)
	if _, err := js.Publish(ctx, EventSubject(1, "x"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.EventsMaxBytes, c.DLQMaxBytes, c.Compression = 4<<20, 1<<20, "none"
	st, err := EnsureEventsStream(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	check(4<<20, 1<<20, jetstream.NoCompression)
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("update lost data: %+v %v", info, err)
	}
	c.Compression = "s2"
	if _, err := EnsureEventsStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	check(4<<20, 1<<20, jetstream.S2Compression)
}
