package embedded

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configure an embedded NATS server with JetStream.
type NATSOptions struct {
	Host     string // default 127.0.0.1
	Port     int    // -1: any free port
	StoreDir string // JetStream store; required
	Name     string // server name (cluster node name)
	// SyncInterval is how often JetStream fsyncs (0: server default, 2m);
	// SyncAlways fsyncs every write instead (docs/RUNBOOK.md, "NATS
	// durability").
	SyncInterval time.Duration
	SyncAlways   bool
	// Cluster, when ClusterPort is set, joins Routes as one node of a
	// JetStream cluster named ClusterName.
	ClusterName string
	ClusterPort int
	Routes      []string
	Log         *slog.Logger
}

// StartNATS starts a JetStream-enabled server and waits until it accepts
// connections.
func StartNATS(o NATSOptions) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName:         o.Name,
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		SyncInterval:       o.SyncInterval,
		SyncAlways:         o.SyncAlways,
		NoSigs:             true,
		MaxPayload:         8 << 20,
		JetStreamMaxMemory: 1 << 30,
		JetStreamMaxStore:  64 << 30,
	}
	if o.ClusterPort != 0 {
		opts.Cluster.Name = o.ClusterName
		opts.Cluster.Host = o.Host
		opts.Cluster.Port = o.ClusterPort
		routes := server.RoutesFromStr(joinComma(o.Routes))
		opts.Routes = routes
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Log != nil {
		s.SetLoggerV2(&natsLogger{o.Log}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 30s on %s:%d", o.Host, o.Port)
	}
	return s, nil
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// natsLogger adapts slog to the server's logger; debug and trace are off.
type natsLogger struct{ l *slog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Tracef(format string, v ...any)  {}
