// Package devstack brings up the infrastructure of `stacklens dev`: NATS
// JetStream in-process (state under DATA_DIR/nats), a Kafka-protocol broker
// in-process (DATA_DIR/kafka) unless KAFKA_BOOTSTRAP_SERVERS names a real
// one, and PostgreSQL — the configured one when it answers, else a private
// cluster under DATA_DIR/postgres — then points the configuration at them.
package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
)

// Default listen addresses of the embedded servers (docs/ARCHITECTURE.md §1).
const (
	DefaultKafkaPort = 9092
	DefaultNATSPort  = 4222
)

// Endpoints are the addresses a developer or a role process needs; they
// are printed and written to DATA_DIR/endpoints.json.
type Endpoints struct {
	Kafka     string `json:"kafka"`
	NATS      string `json:"nats"`
	Postgres  string `json:"postgres"`
	API       string `json:"api"`
	Dashboard string `json:"dashboard"`
	Metrics   string `json:"metrics"`
}

// Stack is the running infrastructure. Fields are nil for servers that
// were external.
type Stack struct {
	NATS      *server.Server
	Kafka     *embedded.Kafka
	Postgres  *embedded.Postgres
	Endpoints Endpoints
	dataDir   string
}

// Ports of the embedded servers; zero values mean the defaults above, -1
// any free port (tests).
type Ports struct {
	NATS, Kafka int
}

func (p Ports) resolve() (nats, kafka int, err error) {
	pick := func(v, def int) (int, error) {
		switch v {
		case 0:
			return def, nil
		case -1:
			return embedded.FreePort()
		}
		return v, nil
	}
	if nats, err = pick(p.NATS, DefaultNATSPort); err != nil {
		return 0, 0, err
	}
	kafka, err = pick(p.Kafka, DefaultKafkaPort)
	return nats, kafka, err
}

// Start starts what is not external and rewrites cfg to point at it.
func Start(ctx context.Context, cfg *config.Loaded, ports Ports, log *slog.Logger) (_ *Stack, err error) {
	natsPort, kafkaPort, err := ports.resolve()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Runtime.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	s := &Stack{dataDir: dir}
	defer func() {
		if err != nil {
			s.Stop(log)
		}
	}()

	if cfg.Sources["NATS_URL"] == config.SourceDefault {
		log.Info("starting embedded NATS JetStream", "addr", fmt.Sprintf("127.0.0.1:%d", natsPort), "store", filepath.Join(dir, "nats"), "sync_interval", cfg.Runtime.NATSSyncInterval)
		interval, always, serr := cfg.Runtime.NATSSync()
		if serr != nil {
			return nil, serr
		}
		s.NATS, err = embedded.StartNATS(embedded.NATSOptions{Port: natsPort, StoreDir: filepath.Join(dir, "nats"), Name: "stacklens-dev",
			SyncInterval: interval, SyncAlways: always, Log: log.With("component", "nats-server")})
		if err != nil {
			return nil, err
		}
		cfg.NATS.URL = s.NATS.ClientURL()
	}
	if cfg.Sources["KAFKA_BOOTSTRAP_SERVERS"] == config.SourceDefault {
		log.Info("starting embedded Kafka broker", "addr", fmt.Sprintf("127.0.0.1:%d", kafkaPort), "dir", filepath.Join(dir, "kafka"))
		s.Kafka, err = embedded.StartKafka(embedded.KafkaOptions{
			Port:       kafkaPort,
			Topics:     []string{cfg.Kafka.InputTopic, cfg.Kafka.OutputTopic},
			Partitions: int32(cfg.Kafka.Partitions),
			DataDir:    filepath.Join(dir, "kafka"),
		})
		if err != nil {
			return nil, err
		}
		cfg.Kafka.BootstrapServers = s.Kafka.ListenAddrs()
	}
	if err := s.startPostgres(ctx, cfg, log); err != nil {
		return nil, err
	}

	api := "http://" + net.JoinHostPort(cfg.API.Host, strconv.Itoa(cfg.API.Port))
	s.Endpoints = Endpoints{
		Kafka:     cfg.Kafka.BootstrapServers[0],
		NATS:      cfg.NATS.URL,
		Postgres:  cfg.DB.DSN(),
		API:       api,
		Dashboard: api + "/",
		Metrics:   "http://" + net.JoinHostPort(cfg.Telemetry.MetricsHost, strconv.Itoa(cfg.Telemetry.MetricsPort)) + "/metrics",
	}
	return s, nil
}

// startPostgres uses the configured server when it accepts the configured
// credentials, else starts (or resumes) the private cluster.
func (s *Stack) startPostgres(ctx context.Context, cfg *config.Loaded, log *slog.Logger) error {
	if reachable(ctx, cfg.DB.DSN()) {
		log.Info("using configured PostgreSQL", "host", cfg.DB.Host, "port", cfg.DB.Port, "db", cfg.DB.Name)
		return nil
	}
	port := cfg.DB.Port
	if !portFree(port) {
		p, err := embedded.FreePort()
		if err != nil {
			return err
		}
		port = p
	}
	pgDir := filepath.Join(s.dataDir, "postgres")
	log.Info("starting private PostgreSQL cluster", "dir", pgDir, "port", port)
	pg, err := embedded.StartPostgres(ctx, embedded.PostgresOptions{Dir: pgDir, Port: port, Fsync: true, Log: log})
	if err != nil {
		return err
	}
	s.Postgres = pg
	if err := bootstrapDatabase(ctx, pg.DSN("postgres", "postgres"), cfg.DB); err != nil {
		return err
	}
	cfg.DB.URL = pg.DSN(cfg.DB.User, cfg.DB.Name)
	return nil
}

// bootstrapDatabase creates the configured user (a superuser: the private
// cluster listens on loopback only and migrations create roles and
// extensions) and database.
func bootstrapDatabase(ctx context.Context, superDSN string, db config.DB) error {
	conn, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", db.User).Scan(&exists); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+pgx.Identifier{db.User}.Sanitize()+" LOGIN SUPERUSER"); err != nil {
			return fmt.Errorf("devstack: create role %s: %w", db.User, err)
		}
	}
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db.Name).Scan(&exists); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" OWNER "+pgx.Identifier{db.User}.Sanitize()); err != nil {
			return fmt.Errorf("devstack: create database %s: %w", db.Name, err)
		}
	}
	return nil
}

func reachable(ctx context.Context, dsn string) bool {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return false
	}
	_ = c.Close(cctx)
	return true
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// WriteEndpoints writes DATA_DIR/endpoints.json, and DATA_DIR/dev.pid for
// `task down`, and returns the endpoints file's path.
func (s *Stack) WriteEndpoints() (string, error) {
	b, err := json.MarshalIndent(s.Endpoints, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(s.dataDir, "dev.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return "", err
	}
	p := filepath.Join(s.dataDir, "endpoints.json")
	return p, os.WriteFile(p, append(b, '\n'), 0o600)
}

// Stop stops the embedded servers: Kafka, then NATS, then PostgreSQL.
func (s *Stack) Stop(log *slog.Logger) {
	if s.Kafka != nil {
		log.Info("stopping embedded Kafka broker")
		s.Kafka.Close()
		s.Kafka = nil
	}
	if s.NATS != nil {
		log.Info("stopping embedded NATS")
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
		s.NATS = nil
	}
	if s.Postgres != nil {
		log.Info("stopping private PostgreSQL")
		if err := s.Postgres.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("stopping PostgreSQL", "err", err)
		}
		s.Postgres = nil
	}
	_ = os.Remove(filepath.Join(s.dataDir, "endpoints.json"))
	_ = os.Remove(filepath.Join(s.dataDir, "dev.pid"))
}
