package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
)

// The infrastructure as processes of their own: one embedded NATS node and
// the embedded Kafka broker, each with the roles' metrics server (/ready,
// /metrics with the process's CPU, /debug/pprof). `stacklens bench` runs
// them so that every CPU-second has an owner, and the network-partition
// tests run each on its own host (docs/PERFORMANCE.md, docs/CHAOS.md).

const (
	natsServerSummary  = "run one embedded NATS JetStream node (optionally of a cluster) as its own process"
	kafkaBrokerSummary = "run the embedded Kafka broker as its own process"
)

func cmdNATSServer(ctx context.Context, c *cli) int {
	var o embedded.NATSOptions
	var routes string
	cfg, code := loadConfig(c, "nats-server", natsServerSummary, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Host, "host", "127.0.0.1", "client (and cluster) listen address")
		fs.IntVar(&o.Port, "port", 4222, "client port (-1: any free port)")
		fs.StringVar(&o.StoreDir, "store", "", "JetStream store directory (default DATA_DIR/nats)")
		fs.StringVar(&o.Name, "name", "stacklens-nats", "server name, unique in a cluster")
		fs.StringVar(&o.ClusterName, "cluster-name", "stacklens", "cluster name")
		fs.IntVar(&o.ClusterPort, "cluster-port", 0, "cluster (route) port; 0: a standalone server")
		fs.StringVar(&routes, "routes", "", "comma-separated nats-route://host:port of the other cluster nodes")
	})
	if cfg == nil {
		return code
	}
	if o.StoreDir == "" {
		o.StoreDir = filepath.Join(cfg.Runtime.DataDir, "nats")
	}
	if routes != "" {
		o.Routes = strings.Split(routes, ",")
	}
	if o.ClusterPort == 0 && len(o.Routes) > 0 {
		fmt.Fprintln(c.stderr, "stacklens: --routes needs --cluster-port")
		return exitConfig
	}
	interval, always, err := cfg.Runtime.NATSSync()
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens:", oneLine(err))
		return exitConfig
	}
	o.SyncInterval, o.SyncAlways = interval, always
	e := newEnv(c, cfg, "nats-server")
	o.Log = e.log.With("component", "nats-server")
	return runComponents(ctx, e, component{name: "nats-server", run: func(ctx context.Context, e *env) error {
		e.health.Set("nats-server", errors.New("starting"))
		s, err := embedded.StartNATS(o)
		if err != nil {
			return err
		}
		e.log.Info("NATS JetStream node ready", "client_url", s.ClientURL(), "cluster_port", o.ClusterPort, "store", o.StoreDir,
			"sync_interval", cfg.Runtime.NATSSyncInterval)
		e.health.Set("nats-server", nil)
		<-ctx.Done()
		s.Shutdown()
		s.WaitForShutdown()
		return nil
	}})
}

func cmdKafkaBroker(ctx context.Context, c *cli) int {
	var o embedded.KafkaOptions
	cfg, code := loadConfig(c, "kafka-broker", kafkaBrokerSummary, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Host, "host", "127.0.0.1", "listen (and advertised) address")
		fs.IntVar(&o.Port, "port", 9092, "port (0: any free port)")
		fs.StringVar(&o.DataDir, "dir", "", "log directory (default DATA_DIR/kafka)")
	})
	if cfg == nil {
		return code
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(cfg.Runtime.DataDir, "kafka")
	}
	o.Topics = []string{cfg.Kafka.InputTopic, cfg.Kafka.OutputTopic}
	o.Partitions = int32(cfg.Kafka.Partitions)
	e := newEnv(c, cfg, "kafka-broker")
	o.Log = e.log.With("component", "kafka-broker")
	return runComponents(ctx, e, component{name: "kafka-broker", run: func(ctx context.Context, e *env) error {
		e.health.Set("kafka-broker", errors.New("starting"))
		k, err := embedded.StartKafka(o)
		if err != nil {
			return err
		}
		e.log.Info("Kafka broker ready", "addrs", k.ListenAddrs(), "dir", o.DataDir, "topics", o.Topics)
		e.health.Set("kafka-broker", nil)
		<-ctx.Done()
		done := make(chan struct{})
		go func() { k.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return errors.New("kafka broker did not close within 10s")
		}
		return nil
	}})
}
