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
		Discard:            jetstream.DiscardOld,
		Duplicates:         2 * time.Minute,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		AllowRollup:        true,
		AllowMsgTTL:        true,
		Metadata:           map[string]string{"stacklens.shards": fmt.Sprint(c.Shards)},
	}
}

// ErrShardsChanged means the stream was created with another SHARDS value;
// shards are fixed at stream creation because they name its subjects.
var ErrShardsChanged = errors.New("SHARDS differs from the value the event stream was created with")

// EnsureEventsStream creates or updates STACKLENS_EVENTS. Updating keeps
// the stream's data; the shard count must not change.
func EnsureEventsStream(ctx context.Context, js jetstream.JetStream, c config.NATS) (jetstream.Stream, error) {
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
	if have.MaxAge != want.MaxAge || have.Replicas != want.Replicas || !have.AllowAtomicPublish || !have.AllowRollup {
		if st, err = js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("update stream %s: %w", StreamEvents, err)
		}
	}
	return st, nil
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
