package embedded

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// KafkaOptions configure the embedded Kafka-protocol broker.
type KafkaOptions struct {
	Host       string   // listen address (default 127.0.0.1), also advertised
	Port       int      // 0: any free port
	Topics     []string // created at start
	Partitions int32    // of each topic (default 12)
	DataDir    string   // persist the log here ("" keeps it in memory)
	Log        *slog.Logger
	Opts       []kfake.Opt // more kfake options (tests: a fault-injecting listener)
}

// Kafka is the embedded broker: a kfake cluster plus the consumer-group
// member reaper that makes up for a kfake defect (see memberReaper).
type Kafka struct {
	*kfake.Cluster
	stopReaper func()
}

// Close stops the reaper and the broker.
func (k *Kafka) Close() {
	k.stopReaper()
	k.Cluster.Close()
}

// StartKafka starts a single-broker kfake cluster.
func StartKafka(o KafkaOptions) (*Kafka, error) {
	if o.Partitions <= 0 {
		o.Partitions = 12
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(o.Port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(int(o.Partitions)),
	}
	if len(o.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(o.Partitions, o.Topics...))
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	if o.Host != "" && o.Host != "127.0.0.1" {
		// kfake listens on 127.0.0.1 and advertises what it listens on; a
		// broker on its own host (a network namespace) needs that host.
		opts = append(opts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, port, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(o.Host, port))
		}))
	}
	c, err := kfake.NewCluster(append(opts, o.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kafka{Cluster: c, stopReaper: newMemberReaper(c, log, time.Second, 2*time.Second).start()}, nil
}
