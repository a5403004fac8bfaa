package natsutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/retry"
)

// EventsStreamConfig is the configuration of STACKLENS_EVENTS.
func EventsStreamConfig(c config.NATS) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               StreamEvents,
		Description:        "StackLens event log of record: events, bridge checkpoints, dead letters",
		Subjects:           []string{EventsPrefix + ">", OffsetsPrefix + ">", DLQPrefix + ">"},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           c.Replicas,
		MaxAge:             c.EventsMaxAge,
		MaxBytes:           maxBytes(c.EventsMaxBytes),
		Discard:            jetstream.DiscardOld,
		Compression:        Compression(c),
		Duplicates:         2 * time.Minute,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		AllowRollup:        true,
		AllowMsgTTL:        true,
		Metadata:           map[string]string{"stacklens.shards": fmt.Sprint(c.Shards)},
	}
}

// Compression is NATS_COMPRESSION as a stream setting. The server
// compresses each message block once it is full, so a change applies to
// blocks written after it; older blocks stay as they were.
func Compression(c config.NATS) jetstream.StoreCompression {
	if c.Compression == "none" {
		return jetstream.NoCompression
	}
	return jetstream.S2Compression
}

// maxBytes turns a 0 (no bound) of EVENTS_MAX_BYTES/DLQ_MAX_BYTES into
// JetStream's -1.
func maxBytes(n int) int64 {
	if n <= 0 {
		return -1
	}
	return int64(n)
}

// ErrShardsChanged means the stream was created with another SHARDS value;
// shards are fixed at stream creation because they name its subjects.
var ErrShardsChanged = errors.New("SHARDS differs from the value the event stream was created with")

// EnsureEventsStream creates or updates STACKLENS_EVENTS, and then
// STACKLENS_DLQ (EnsureDLQStream). Updating keeps the streams' data; the
// shard count must not change.
func EnsureEventsStream(ctx context.Context, js jetstream.JetStream, c config.NATS) (jetstream.Stream, error) {
	st, err := ensureEvents(ctx, js, c)
	if err != nil {
		return nil, err
	}
	// Every role that writes or reads the event stream provisions the
	// dead-letter stream with it, so no dead letter is written while
	// nothing keeps it past EVENTS_MAX_AGE (the source copies from the
	// beginning of the event stream anyway).
	if _, err := EnsureDLQStream(ctx, js, c); err != nil {
		return nil, err
	}
	return st, nil
}

func ensureEvents(ctx context.Context, js jetstream.JetStream, c config.NATS) (jetstream.Stream, error) {
	want := EventsStreamConfig(c)
	st, err := js.Stream(ctx, StreamEvents)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, want)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", StreamEvents, err)
		}
		if err == nil {
			return st, nil
		}
		st, err = js.Stream(ctx, StreamEvents)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamEvents, err)
	}
	have := st.CachedInfo().Config
	if s, ok := have.Metadata["stacklens.shards"]; ok && s != want.Metadata["stacklens.shards"] {
		return nil, fmt.Errorf("stream %s has %s shards, SHARDS=%d: %w", StreamEvents, s, c.Shards, ErrShardsChanged)
	}
	if have.MaxAge != want.MaxAge || have.Replicas != want.Replicas || !have.AllowAtomicPublish || !have.AllowRollup ||
		have.MaxBytes != want.MaxBytes || have.Compression != want.Compression {
		if st, err = js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("update stream %s: %w", StreamEvents, err)
		}
	}
	return st, nil
}

// DLQStreamConfig is the configuration of STACKLENS_DLQ: no subjects of
// its own, one source — the dead letters of STACKLENS_EVENTS — and max age
// DLQ_MAX_AGE. The server copies each sourced message once, in order, and
// resumes after a restart from the last sequence it copied (recorded in the
// copies' Nats-Stream-Source header), so a dead letter is there exactly
// once. Replay markers (stacklens.dlq.replayed.<seq>) are copied too.
func DLQStreamConfig(c config.NATS) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamDLQ,
		Description: "StackLens dead letters: copies of the stacklens.dlq.> messages of " + StreamEvents + ", kept DLQ_MAX_AGE",
		Sources:     []*jetstream.StreamSource{{Name: StreamEvents, FilterSubject: DLQPrefix + ">"}},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      c.DLQMaxAge,
		MaxBytes:    maxBytes(c.DLQMaxBytes),
		Discard:     jetstream.DiscardOld,
		Compression: Compression(c),
		AllowDirect: true,
	}
}

// EnsureDLQStream creates or updates STACKLENS_DLQ. Updating keeps the
// copies already made.
func EnsureDLQStream(ctx context.Context, js jetstream.JetStream, c config.NATS) (jetstream.Stream, error) {
	want := DLQStreamConfig(c)
	st, err := js.Stream(ctx, StreamDLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, want)
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", StreamDLQ, err)
		}
		st, err = js.Stream(ctx, StreamDLQ)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	have := st.CachedInfo().Config
	if have.MaxAge != want.MaxAge || have.Replicas != want.Replicas || have.MaxBytes != want.MaxBytes ||
		have.Compression != want.Compression || len(have.Sources) != 1 ||
		have.Sources[0].Name != StreamEvents || have.Sources[0].FilterSubject != want.Sources[0].FilterSubject {
		if st, err = js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("update stream %s: %w", StreamDLQ, err)
		}
	}
	return st, nil
}

// ConfigBucketConfig is the configuration of stacklens_config: a few
// small keys the API writes and the processors watch; no TTL.
func ConfigBucketConfig(c config.NATS) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      ConfigBucket,
		Description: "StackLens settings distributed to the processors (" + SLOThresholdsKey + ")",
		History:     1,
		Replicas:    c.Replicas,
		Storage:     jetstream.FileStorage,
	}
}

// EnsureKV creates or updates a KV bucket.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ProvisionWithRetry runs provision — creating or updating streams and
// buckets — until it succeeds, fails with ErrShardsChanged (permanent) or
// ctx ends. While NATS or JetStream is unavailable (down, no leader yet, a
// bucket that cannot be created for now) each failure is logged and passed
// to onErr, if not nil, so the caller can report itself not ready.
func ProvisionWithRetry(ctx context.Context, log *slog.Logger, provision func(context.Context) error, onErr func(error)) error {
	return retry.Until(ctx, retry.New(100*time.Millisecond, 5*time.Second), func(ctx context.Context) error {
		err := provision(ctx)
		if errors.Is(err, ErrShardsChanged) {
			return retry.Permanent(err)
		}
		return err
	}, func(err error, wait time.Duration) {
		if onErr != nil {
			onErr(err)
		}
		log.Warn("cannot provision streams and buckets; retrying", "err", err, "in", wait.Round(time.Millisecond))
	})
}
