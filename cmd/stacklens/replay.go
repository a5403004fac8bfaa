package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/processor"
)

const replaySummary = "rebuild the aggregates from the event stream into fresh KV buckets, then swap them in (processors stopped)"

func cmdReplay(ctx context.Context, c *cli) int {
	var (
		fromSeq           uint64
		fromTime          string
		intoFresh, keep   bool
		force, noProgress bool
		suffix            string
	)
	cfg, code := loadConfig(c, "replay", replaySummary, func(fs *flag.FlagSet) {
		fs.Uint64Var(&fromSeq, "from-seq", 0, "start at this stream sequence (default: the beginning of the stream)")
		fs.StringVar(&fromTime, "from-time", "", "start at this time (RFC 3339) instead of a sequence")
		fs.BoolVar(&intoFresh, "into-fresh", false, "only build the fresh buckets stacklens_agg_<window>_<suffix>; leave the live buckets alone")
		fs.StringVar(&suffix, "suffix", "", "suffix of the fresh buckets (default replay_<unix-seconds>)")
		fs.BoolVar(&keep, "keep", false, "keep the fresh buckets after swapping them in")
		fs.BoolVar(&force, "force", false, "swap even though shard leases look held (processors running): unsafe")
		fs.BoolVar(&noProgress, "no-progress", false, "do not draw a progress bar")
	})
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "replay")
	opts := processor.ReplayOptions{FromSeq: fromSeq, IntoFresh: intoFresh, Suffix: suffix, Keep: keep, Force: force}
	if fromTime != "" {
		t, err := time.Parse(time.RFC3339, fromTime)
		if err != nil {
			fmt.Fprintf(c.stderr, "stacklens: --from-time %q: want RFC 3339, e.g. 2026-11-29T01:00:00Z\n", fromTime)
			return exitConfig
		}
		opts.FromTime = t
	}
	if fromSeq > 0 && fromTime != "" {
		fmt.Fprintln(c.stderr, "stacklens: give --from-seq or --from-time, not both")
		return exitConfig
	}
	if !noProgress {
		opts.Progress = c.stderr
	}
	nc, err := natsutil.Connect(ctx, cfg.NATS, natsutil.DefaultName("replay"), e.log)
	if err != nil {
		e.log.Error("cannot connect", "err", err)
		return exitFail
	}
	defer nc.Close()
	res, err := processor.Replay(ctx, cfg.Config, nc, e.log, opts)
	if err != nil {
		e.log.Error("replay failed", "err", err)
		return exitFail
	}
	fmt.Fprintf(c.stdout, "replayed %d events into %d aggregates (%s)\n", res.Events, res.Keys, strings.Join(res.Buckets, ", "))
	if intoFresh {
		fmt.Fprintln(c.stdout, "live buckets untouched; to swap in, stop the processors and run `stacklens replay` without --into-fresh")
	} else {
		fmt.Fprintf(c.stdout, "swapped %d aggregates into the live buckets; shard checkpoints set to the replay's end — start the processors\n", res.Swapped)
	}
	return exitOK
}
