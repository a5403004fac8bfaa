package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// plainServer starts a core NATS server (no JetStream) with the given
// options on a free port; it is shut down when the test ends.
func plainServer(t *testing.T, o server.Options) *server.Server {
	t.Helper()
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	o.Host, o.Port, o.NoSigs = "127.0.0.1", port, true
	s, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func TestConnectWithNKeySeed(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	s := plainServer(t, server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	dir := t.TempDir()
	good := filepath.Join(dir, "good.nk")
	if err := os.WriteFile(good, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	unknown := filepath.Join(dir, "unknown.nk")
	if err := os.WriteFile(unknown, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.nk")
	if err := os.WriteFile(garbage, []byte("not a seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	log := telemetry.Discard()

	nc, err := Connect(ctx, config.NATS{URL: s.ClientURL(), NKeySeedFile: good}, "nk", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", nil); err != nil {
		t.Error(err)
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("authenticated connection not usable: %v", err)
	}
	nc.Close()

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if nc, err := Connect(short, config.NATS{URL: s.ClientURL(), NKeySeedFile: unknown}, "nk", log); err == nil {
		nc.Close()
		t.Error("unknown nkey connected")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unknown nkey: %v, want the context deadline", err)
	}

	for _, path := range []string{filepath.Join(dir, "missing.nk"), garbage} {
		_, err := Connect(ctx, config.NATS{URL: s.ClientURL(), NKeySeedFile: path}, "nk", log)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Var != "NATS_NKEY_SEED_FILE" {
			t.Errorf("seed %s: %v, want a config error naming NATS_NKEY_SEED_FILE", filepath.Base(path), err)
		}
	}
}

func TestConnectRejectsUnusableTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	for name, c := range map[string]config.NATS{
		"missing CA":   {TLSCAFile: filepath.Join(dir, "nope.pem")},
		"CA not PEM":   {TLSCAFile: notPEM},
		"missing cert": {TLSCertFile: filepath.Join(dir, "c.pem"), TLSKeyFile: filepath.Join(dir, "k.pem")},
	} {
		t.Run(name, func(t *testing.T) {
			// The URL points at nothing: Connect must fail on the files,
			// before it would start retrying the connection.
			c.URL = "nats://127.0.0.1:1"
			nc, err := Connect(ctx, c, "tls", telemetry.Discard())
			if err == nil {
				nc.Close()
				t.Fatal("connected with unusable TLS files")
			}
			if !strings.HasPrefix(err.Error(), "nats: connect nats://127.0.0.1:1:") {
				t.Errorf("error does not name the URL: %v", err)
			}
		})
	}
}

func TestAsyncErrorsAreLogged(t *testing.T) {
	s := plainServer(t, server.Options{Users: []*server.User{{
		Username: "svc", Password: "pw",
		Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{"secret.>"}},
			Subscribe: &server.SubjectPermission{Deny: []string{"secret.>"}},
		},
	}}})
	var buf testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	nc, err := Connect(testenv.Context(t), config.NATS{URL: s.ClientURL(), User: "svc", Password: "pw"}, "async", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// A permissions violation has no subscription attached.
	if _, err := nc.SubscribeSync("secret.plans"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if out := buf.String(); !strings.Contains(out, "nats async error") || !strings.Contains(out, `Subscription to \"secret.plans\"`) {
			return fmt.Errorf("permissions violation not logged: %q", out)
		}
		return nil
	})

	// A slow consumer names its subscription.
	release := make(chan struct{})
	defer close(release)
	sub, err := nc.Subscribe("slow.x", func(*nats.Msg) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := nc.Publish("slow.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		out := buf.String()
		if !strings.Contains(out, "subject=slow.x") || !strings.Contains(out, nats.ErrSlowConsumer.Error()) {
			return fmt.Errorf("slow consumer not logged with its subject: %q", out)
		}
		return nil
	})
}

// racingJS simulates another instance creating the stream between this
// instance's lookup and its create: the first lookups report "not found".
type racingJS struct {
	jetstream.JetStream
	misses int
}

func (r *racingJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if r.misses > 0 {
		r.misses--
		return nil, jetstream.ErrStreamNotFound
	}
	return r.JetStream.Stream(ctx, name)
}

func TestEnsureEventsStreamLosesCreateRace(t *testing.T) {
	srv := testenv.NATS(t)
	js := srv.JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 16, EventsMaxAge: 168 * time.Hour}
	// The winner created the stream with an older retention and wrote to it.
	older := c
	older.EventsMaxAge = time.Hour
	if _, err := js.CreateStream(ctx, EventsStreamConfig(older)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, EventSubject(2, "svc"), []byte("{}")); err != nil {
		t.Fatal(err)
	}

	r := &racingJS{JetStream: js, misses: 1}
	st, err := EnsureEventsStream(ctx, r, c)
	if err != nil {
		t.Fatalf("losing the create race: %v", err)
	}
	if r.misses != 0 {
		t.Fatal("lookup was not consulted")
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != c.EventsMaxAge || info.State.Msgs != 1 {
		t.Errorf("after the race: max age %v, %d msgs; want %v and the winner's message", info.Config.MaxAge, info.State.Msgs, c.EventsMaxAge)
	}

	// Losing the race to an instance with another SHARDS still trips the guard.
	r.misses = 1
	c.Shards = 4
	if _, err := EnsureEventsStream(ctx, r, c); !errors.Is(err, ErrShardsChanged) {
		t.Errorf("race with other SHARDS: %v", err)
	}
}

func TestEnsureEventsStreamReportsServerErrors(t *testing.T) {
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 16, EventsMaxAge: time.Hour}

	t.Run("create rejected", func(t *testing.T) {
		js := testenv.NATS(t).JetStream(t)
		bad := c
		bad.Replicas = 3 // a single server cannot hold three replicas
		_, err := EnsureEventsStream(ctx, js, bad)
		if err == nil || !strings.Contains(err.Error(), "create stream "+StreamEvents) {
			t.Fatalf("create with 3 replicas on one server: %v", err)
		}
		if _, err := js.Stream(ctx, StreamEvents); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("failed create left a stream behind: %v", err)
		}
	})

	t.Run("update rejected", func(t *testing.T) {
		js := testenv.NATS(t).JetStream(t)
		if _, err := EnsureEventsStream(ctx, js, c); err != nil {
			t.Fatal(err)
		}
		bad := c
		bad.Replicas = 3
		_, err := EnsureEventsStream(ctx, js, bad)
		if err == nil || !strings.Contains(err.Error(), "update stream "+StreamEvents) {
			t.Fatalf("update to 3 replicas on one server: %v", err)
		}
		st, err := js.Stream(ctx, StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 1 {
			t.Errorf("replicas after rejected update: %d", r)
		}
	})

	t.Run("jetstream disabled", func(t *testing.T) {
		s := plainServer(t, server.Options{})
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		_, err = EnsureEventsStream(ctx, js, c)
		if err == nil || !strings.HasPrefix(err.Error(), "stream "+StreamEvents+":") {
			t.Fatalf("without JetStream: %v", err)
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("a server without JetStream reported as a missing stream: %v", err)
		}
	})

	t.Run("server down", func(t *testing.T) {
		srv := testenv.NATS(t)
		js := srv.JetStream(t)
		srv.Shutdown()
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := EnsureEventsStream(short, js, c)
		if err == nil || !strings.HasPrefix(err.Error(), "stream "+StreamEvents+":") {
			t.Fatalf("server down: %v", err)
		}
	})
}
