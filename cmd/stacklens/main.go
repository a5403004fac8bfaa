// Command stacklens is the single binary of StackLens: one subcommand per
// role (bridge, processor, projections, api), plus the embedded
// development stack, migrations, replay and operator tools.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	// EVENT_TIMEZONE names IANA zones; embed the zone database so a host or
	// image without /usr/share/zoneinfo (distroless, scratch) still knows them.
	_ "time/tzdata"
)

func main() { os.Exit(run()) }

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2 // bad configuration or usage
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *cli) int
}

// cli carries what a subcommand needs from the process.
type cli struct {
	args   []string
	stdout io.Writer
	stderr io.Writer
	env    func(string) (string, bool)
}

// commands is every subcommand, in the order --help lists them: a closed
// list, so what the binary can do is read here and nowhere else.
func commands() []command {
	return []command{
		roleCommand(apiRole),
		{"backup", "write a compressed pg_dump of the database (--file, default backups/stacklens_<time>.dump)", cmdBackup},
		{"bench", "benchmark: ceilings, maximum sustainable rate, freshness, API latency, cost per role (docs/PERFORMANCE.md)", cmdBench},
		roleCommand(bridgeRole),
		{"config", "check: validate the configuration and print it (secrets masked); vars: list every variable", cmdConfig},
		{"dev", "run the whole product in one process on embedded NATS, Kafka and PostgreSQL", cmdDev},
		{"dlq", "list: show dead letters (--reason, --stage, --since, --limit); replay: re-inject a fixed one once (--seq, --file)", cmdDLQ},
		{"healthcheck", "exit 0 when this host's role answers ready on METRICS_PORT (API_PORT with ENABLE_METRICS=false; container HEALTHCHECK)", cmdHealthcheck},
		{"kafka-broker", kafkaBrokerSummary, cmdKafkaBroker},
		{"loadgen", "produce realistic events to Kafka at a fixed rate (open loop), with optional error bursts", cmdLoadgen},
		{"migrate", "up: apply the SQL migrations (idempotent, safe concurrently); status: list them", cmdMigrate},
		{"nats-server", natsServerSummary, cmdNATSServer},
		roleCommand(processorRole),
		roleCommand(projectionsRole),
		{"replay", replaySummary, cmdReplay},
		{"restore", "restore a backup written by `stacklens backup` (--file)", cmdRestore},
		{"version", "print version and commit", cmdVersion},
	}
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return dispatch(ctx, &cli{args: os.Args[1:], stdout: os.Stdout, stderr: os.Stderr, env: os.LookupEnv})
}

func dispatch(ctx context.Context, c *cli) int {
	if len(c.args) == 0 {
		usage(c.stderr)
		return exitConfig
	}
	name := c.args[0]
	switch name {
	case "-h", "--help", "help":
		usage(c.stdout)
		return exitOK
	case "-v", "--version":
		name = "version"
	}
	for _, cmd := range commands() {
		if cmd.name == name {
			sub := *c
			sub.args = c.args[1:]
			return cmd.run(ctx, &sub)
		}
	}
	fmt.Fprintf(c.stderr, "stacklens: unknown command %q (see stacklens --help)\n", name)
	return exitConfig
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "StackLens %s — live service analytics: Kafka → JetStream → aggregates → PostgreSQL → API.\n\n", version)
	fmt.Fprintln(w, "Usage: stacklens <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every setting is an environment variable (also read from ./.env) or the flag of the same name:")
	fmt.Fprintln(w, "`stacklens config vars` lists them; `stacklens <command> -h` shows a command's flags.")
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
