package embedded

import (
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kfake"
)

// KafkaOptions configure the embedded Kafka-protocol broker.
type KafkaOptions struct {
	Port       int      // 0: any free port
	Topics     []string // created at start
	Partitions int32    // of each topic (default 12)
	DataDir    string   // persist the log here ("" keeps it in memory)
	Log        *slog.Logger
}

// StartKafka starts a single-broker kfake cluster.
func StartKafka(o KafkaOptions) (*kfake.Cluster, error) {
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
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return c, nil
}
