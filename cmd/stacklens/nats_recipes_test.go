package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// readmeRecipes returns the NATS CLI lines of the README's recipe block.
func readmeRecipes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "<!-- nats-recipes:start -->")
	block, _, ok2 := strings.Cut(block, "<!-- nats-recipes:end -->")
	if !ok || !ok2 {
		t.Fatal("README has no nats-recipes block")
	}
	var out []string
	for _, line := range strings.Split(block, "\n") {
		if strings.HasPrefix(line, "nats ") {
			out = append(out, line)
		}
	}
	if len(out) < 8 {
		t.Fatalf("only %d recipes found", len(out))
	}
	return out
}

// TestNATSCLIRecipes runs every NATS CLI line of the README against a
// running stack and checks the output holds what the README promises.
func TestNATSCLIRecipes(t *testing.T) {
	recipes := readmeRecipes(t)
	bin := filepath.Join(t.TempDir(), "nats")
	// The CLI is pinned in tools/go.mod, apart from the product's modules.
	build := exec.Command("go", "build", "-modfile=../../tools/go.mod", "-o", bin, "github.com/nats-io/natscli/nats")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the NATS CLI: %v\n%s", err, out)
	}

	ep := devStack(t, nil)
	ctx := testenv.Context(t)
	w := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll, Balancer: &kafka.Hash{}}
	var msgs []kafka.Message
	for i := range 20 {
		msgs = append(msgs, kafka.Message{Key: []byte("checkout"), Value: fmt.Appendf(nil,
			`{"timestamp":%q,"service":"checkout","level":"info","latency_ms":%d,"risk_score":0.1}`, time.Now().UTC().Format(time.RFC3339Nano), 10+i)})
	}
	msgs = append(msgs, kafka.Message{Key: []byte("junk"), Value: []byte("this is not json")})
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	nc, err := nats.Connect(ep.NATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var windowStart, partition string
	testenv.Eventually(t, 60*time.Second, func() error {
		kv, err := js.KeyValue(ctx, natsutil.AggBucket("1min"))
		if err != nil {
			return err
		}
		keys, err := kv.Keys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if s, ok := strings.CutPrefix(k, "checkout."); ok {
				windowStart = s
			}
		}
		if windowStart == "" {
			return errors.New("no checkout aggregate yet")
		}
		st, err := js.Stream(ctx, natsutil.StreamEvents)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(natsutil.OffsetsPrefix+">"))
		if err != nil {
			return err
		}
		var subjects []string
		for s := range info.State.Subjects {
			subjects = append(subjects, s)
		}
		if len(subjects) == 0 {
			return errors.New("no bridge checkpoint yet")
		}
		sort.Strings(subjects)
		partition = subjects[0][strings.LastIndexByte(subjects[0], '.')+1:]
		dlq, err := st.Info(ctx, jetstream.WithSubjectFilter(natsutil.DLQPrefix+">"))
		if err != nil || len(dlq.State.Subjects) == 0 {
			return errors.New("no dead letter yet")
		}
		// The recipes read the dead letters where they are kept.
		dst, err := js.Stream(ctx, natsutil.StreamDLQ)
		if err != nil {
			return err
		}
		if info, err := dst.Info(ctx); err != nil || info.State.Msgs == 0 {
			return fmt.Errorf("no dead letter copied to %s yet (%v)", natsutil.StreamDLQ, err)
		}
		return nil
	})

	for _, line := range recipes {
		cmdline, comment, _ := strings.Cut(line, "#")
		_, want, ok := strings.Cut(comment, "→ ")
		if !ok {
			t.Errorf("recipe %q has no → expectation", line)
			continue
		}
		want = strings.TrimSpace(want)
		cmdline = strings.Replace(cmdline, "nats", bin, 1)
		cmdline = strings.ReplaceAll(cmdline, "<window-start>", windowStart)
		cmdline = strings.ReplaceAll(cmdline, "<partition>", partition)
		watch := strings.Contains(cmdline, " watch ")
		limit := 30 * time.Second
		if watch {
			limit = 3 * time.Second // a watch never ends by itself
		}
		cctx, cancel := context.WithTimeout(ctx, limit)
		cmd := exec.CommandContext(cctx, "bash", "-c", cmdline)
		cmd.Env = append(os.Environ(), "NATS_URL="+ep.NATS)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil && !(watch && cctx.Err() != nil) {
			t.Errorf("%s: %v\n%s", cmdline, err, out)
			continue
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s\noutput lacks %q:\n%s", cmdline, want, out)
		}
	}
}
