package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/dlq"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func cmdDLQ(ctx context.Context, c *cli) int {
	if len(c.args) == 0 || (c.args[0] != "list" && c.args[0] != "replay") {
		fmt.Fprintln(c.stderr, "usage: stacklens dlq list [--reason R] [--stage S] [--since 1h] [--limit N] | stacklens dlq replay --seq N [--file fixed.json]")
		return exitConfig
	}
	sub := *c
	sub.args = c.args[1:]
	var (
		f     dlq.Filter
		since time.Duration
		seq   uint64
		file  string
	)
	cfg, code := loadConfig(&sub, "dlq "+c.args[0], "inspect and replay dead letters", func(fs *flag.FlagSet) {
		fs.StringVar(&f.Reason, "reason", "", "only this reason (e.g. missing_field)")
		fs.StringVar(&f.Stage, "stage", "", "only this stage (bridge, processor)")
		fs.DurationVar(&since, "since", 0, "only dead letters younger than this (e.g. 1h)")
		fs.IntVar(&f.Limit, "limit", 100, "at most this many (0: all)")
		fs.Uint64Var(&seq, "seq", 0, "replay: the dead letter's sequence in STACKLENS_DLQ (SEQ of dlq list)")
		fs.StringVar(&file, "file", "", "replay: the corrected event JSON (- for stdin; default: the original payload)")
	})
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "dlq")
	nc, err := natsutil.Connect(ctx, cfg.NATS, natsutil.DefaultName("dlq"), e.log)
	if err != nil {
		e.log.Error("dlq", "err", err)
		return exitFail
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// The dead letters are read from STACKLENS_DLQ; provisioning it here
	// too makes the command work before any role of this version ran (the
	// source then copies the event stream's dead letters from its start).
	if _, err := natsutil.EnsureDLQStream(ctx, js, cfg.NATS); err != nil {
		e.log.Error("dlq", "err", err)
		return exitFail
	}

	if c.args[0] == "list" {
		if since > 0 {
			f.Since = time.Now().Add(-since)
		}
		letters, err := dlq.List(ctx, js, f)
		if err != nil {
			e.log.Error("dlq list", "err", err)
			return exitFail
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tEVENT_SEQ\tTIME\tSTAGE\tREASON\tKAFKA\tREPLAYED\tERROR\tPAYLOAD")
		for _, l := range letters {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s/%s@%s\t%v\t%s\t%s\n", l.Seq, l.EventSeq, l.Time.UTC().Format(time.RFC3339), l.Stage, l.Reason,
				l.Topic, l.Partition, l.Offset, l.Replayed, l.Error, preview(l.Payload))
		}
		_ = tw.Flush()
		return exitOK
	}

	if seq == 0 {
		fmt.Fprintln(c.stderr, "stacklens dlq replay: --seq is required")
		return exitConfig
	}
	var payload []byte
	switch file {
	case "":
	case "-":
		payload, err = io.ReadAll(os.Stdin)
	default:
		payload, err = os.ReadFile(file)
	}
	if err != nil {
		e.log.Error("dlq replay", "err", err)
		return exitFail
	}
	loc, err := cfg.Pipeline.EventLocation()
	if err != nil {
		e.log.Error("dlq replay", "err", err)
		return exitConfig
	}
	lim := event.Limits{MaxBytes: cfg.Pipeline.MaxEventBytes, MaxFutureSkew: cfg.Pipeline.MaxFutureSkew, Horizon: cfg.NATS.EventsMaxAge, Location: loc}
	evSeq, err := dlq.Replay(ctx, js, seq, payload, cfg.NATS.Shards, lim, time.Now())
	if err != nil {
		e.log.Error("dlq replay", "err", err)
		return exitFail
	}
	fmt.Fprintf(c.stdout, "replayed dead letter %d as event %d\n", seq, evSeq)
	return exitOK
}

func preview(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return strconv.Quote(s)
}
