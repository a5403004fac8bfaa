package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stacklens/stacklens/internal/lease"
)

// checkpointValue is the JSON value of ckpt.<shard>: every event of the
// shard up to Seq has its effect in the aggregate buckets. Open holds, per
// window, the oldest bucket start that had a non-final aggregate, so a new
// owner can find the keys it must still finalize.
type checkpointValue struct {
	Seq     uint64           `json:"seq"`
	Open    map[string]int64 `json:"open,omitempty"`
	Owner   string           `json:"owner,omitempty"`
	Updated time.Time        `json:"updated"`
}

// writeCheckpoint advances ckpt.<shard> with CAS. Checkpoints only move
// forward: on a conflict (another owner wrote one) the larger wins, which
// is sound because each writer's value is covered by its own successful
// aggregate writes.
func (w *shardWorker) writeCheckpoint(ctx context.Context, now time.Time, consumed uint64, open map[string]int64) error {
	seq := max(consumed, w.ckptSeq)
	if w.sh.coord == nil { // replay: in memory
		w.ckptSeq, w.ckptOpen = seq, open
		return nil
	}
	for attempt := 0; attempt < 3; attempt++ {
		v := checkpointValue{Seq: seq, Open: open, Owner: w.sh.id, Updated: now.UTC()}
		b, _ := json.Marshal(v)
		var rev uint64
		var err error
		if w.ckptRev == 0 {
			rev, err = w.sh.coord.Create(ctx, ckptKey(w.shard), b)
		} else {
			rev, err = w.sh.coord.Update(ctx, ckptKey(w.shard), b, w.ckptRev)
		}
		if err == nil {
			w.ckptSeq, w.ckptRev, w.ckptOpen = seq, rev, open
			return nil
		}
		if !lease.IsConflict(err) {
			return fmt.Errorf("checkpoint: %w", err)
		}
		casConflicts.Inc()
		cur, rev, err := w.getCheckpoint(ctx)
		if err != nil {
			return err
		}
		w.ckptRev = rev
		seq = max(seq, cur.Seq)
		for k, s := range cur.Open {
			if o, ok := open[k]; !ok || s < o {
				if open == nil {
					open = map[string]int64{}
				}
				open[k] = s
			}
		}
	}
	return errors.New("checkpoint: too many conflicts")
}

func (w *shardWorker) getCheckpoint(ctx context.Context) (checkpointValue, uint64, error) {
	var v checkpointValue
	e, err := w.sh.coord.Get(ctx, ckptKey(w.shard))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, nil
	}
	if err != nil {
		return v, 0, fmt.Errorf("checkpoint: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("checkpoint %s: %w", ckptKey(w.shard), err)
	}
	return v, e.Revision(), nil
}

// readCheckpoint loads ckpt.<shard> (replay: keeps the in-memory one).
func (w *shardWorker) readCheckpoint(ctx context.Context) error {
	if w.sh.coord == nil {
		return nil
	}
	v, rev, err := w.getCheckpoint(ctx)
	if err != nil {
		return err
	}
	w.ckptSeq, w.ckptRev, w.ckptOpen = v.Seq, rev, v.Open
	return nil
}
