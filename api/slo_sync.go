package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/retry"
)

// sloSync seeds the SLO definitions of SLO_FILE and distributes the
// latency thresholds of the enabled latency SLOs to the processors: the
// sorted set is written to the stacklens_config bucket after every change
// (after its commit) and reconciled from PostgreSQL periodically, so a
// failed write heals (docs/processor.md, "Latency good-event counts").
type sloSync struct {
	st       *store
	js       jetstream.JetStream // nil: no distribution (no NATS)
	natsCfg  config.NATS
	log      *slog.Logger
	interval time.Duration
	seeds    []SLOInput
	periods  []time.Duration
	onChange func() // after definitions were written: seeds or an API write (drops cached statuses)

	mu sync.Mutex // one publication at a time: the later reads the later state
	kv jetstream.KeyValue
}

// DefaultSLOSyncInterval is how often the thresholds are reconciled.
const DefaultSLOSyncInterval = 30 * time.Second

// loadSLOFile reads and validates SLO_FILE (fail fast: the error names the
// variable).
func loadSLOFile(path string) ([]SLOInput, []time.Duration, error) {
	if path == "" {
		return nil, nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, &config.Error{Var: "SLO_FILE", Msg: err.Error()}
	}
	ins, periods, err := decodeSLOFile(b)
	if err != nil {
		return nil, nil, &config.Error{Var: "SLO_FILE", Msg: path + ": " + err.Error()}
	}
	return ins, periods, nil
}

// run seeds (retrying until the database takes it), then reconciles the
// thresholds every interval until ctx ends.
func (y *sloSync) run(ctx context.Context) {
	if len(y.seeds) > 0 {
		err := retry.Until(ctx, retry.New(200*time.Millisecond, 10*time.Second), y.seed,
			func(err error, wait time.Duration) {
				y.log.Warn("cannot seed the SLOs of SLO_FILE yet; retrying", "err", err, "in", wait.Round(time.Millisecond))
			})
		if err != nil {
			return // ctx ended
		}
	}
	if y.js == nil {
		return
	}
	t := time.NewTicker(y.interval)
	defer t.Stop()
	failing := false
	for {
		if err := y.publish(ctx); err != nil {
			if !failing && ctx.Err() == nil {
				y.log.Warn("cannot reconcile the SLO latency thresholds; retrying", "err", err, "every", y.interval)
			}
			failing = true
		} else {
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// seed upserts every SLO of SLO_FILE by name.
func (y *sloSync) seed(ctx context.Context) error {
	for i := range y.seeds {
		if _, err := y.st.upsertSLO(ctx, &y.seeds[i], y.periods[i]); err != nil {
			return fmt.Errorf("seed SLO %q: %w", y.seeds[i].Name, err)
		}
	}
	y.log.Info("SLOs of SLO_FILE seeded", "slos", len(y.seeds))
	y.onChange()
	return nil
}

// changed runs after an SLO was committed: this replica's cached statuses
// are dropped, and the processors learn the new thresholds now, or at the
// next reconciliation if NATS is unavailable.
func (y *sloSync) changed(ctx context.Context) {
	if y == nil {
		return
	}
	y.onChange()
	if y.js == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := y.publish(ctx); err != nil {
		y.log.Warn("cannot publish the SLO latency thresholds; the periodic reconciliation retries", "err", err)
	}
}

// publish writes the thresholds of the enabled latency SLOs to the
// stacklens_config bucket unless it holds them already.
func (y *sloSync) publish(ctx context.Context) (err error) {
	y.mu.Lock()
	defer y.mu.Unlock()
	defer func() {
		if err != nil {
			y.kv = nil // the bucket may be gone: provision it again next time
		}
	}()
	if y.kv == nil {
		kv, err := natsutil.EnsureKV(ctx, y.js, natsutil.ConfigBucketConfig(y.natsCfg))
		if err != nil {
			return err
		}
		y.kv = kv
	}
	// Another replica may publish meanwhile: read the key's revision
	// before PostgreSQL and write only over that revision, so a replica
	// that read PostgreSQL before the other's commit cannot overwrite the
	// newer set; on a conflict, read both again.
	var ts []float64
	for attempt := 0; ; attempt++ {
		var rev uint64
		var have []byte
		e, err := y.kv.Get(ctx, natsutil.SLOThresholdsKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read %s: %w", natsutil.SLOThresholdsKey, err)
		default:
			rev, have = e.Revision(), e.Value()
		}
		if ts, err = y.st.latencyThresholds(ctx); err != nil {
			return fmt.Errorf("read latency thresholds: %w", err)
		}
		if ts, err = agg.NormalizeThresholds(ts); err != nil {
			return err
		}
		want := agg.EncodeThresholds(ts)
		if rev != 0 && bytes.Equal(have, want) {
			return nil
		}
		if rev == 0 {
			_, err = y.kv.Create(ctx, natsutil.SLOThresholdsKey, want)
		} else {
			_, err = y.kv.Update(ctx, natsutil.SLOThresholdsKey, want, rev)
		}
		if err == nil {
			break
		}
		if attempt < 3 && lease.IsConflict(err) {
			continue
		}
		return fmt.Errorf("write %s: %w", natsutil.SLOThresholdsKey, err)
	}
	y.log.Info("SLO latency thresholds published", "thresholds_ms", ts)
	return nil
}
