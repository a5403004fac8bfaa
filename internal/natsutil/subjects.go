// Package natsutil holds StackLens's JetStream layout — stream, subject and
// bucket names — and the code that connects to NATS from configuration and
// provisions streams and buckets idempotently.
package natsutil

import (
	"strconv"

	"github.com/stacklens/stacklens/internal/event"
)

// Stream and bucket names (docs/ARCHITECTURE.md §2.2).
const (
	// StreamEvents is the event log of record. It also holds the bridge's
	// per-partition checkpoints and the dead letters, so one atomic batch
	// can carry events, dead letters and the checkpoint together.
	StreamEvents = "STACKLENS_EVENTS"
	// StreamDLQ keeps the dead letters for DLQ_MAX_AGE: the server copies
	// every stacklens.dlq.> message of StreamEvents into it (a stream
	// source), so the writers keep their one atomic batch while the dead
	// letters outlive the events' EVENTS_MAX_AGE.
	StreamDLQ = "STACKLENS_DLQ"

	EventsPrefix  = "stacklens.events."
	OffsetsPrefix = "stacklens.offsets."
	DLQPrefix     = "stacklens.dlq."

	// ProcessorBucket holds shard leases, member heartbeats and per-shard
	// checkpoints of the processors.
	ProcessorBucket = "stacklens_processor"
	// AlertingBucket holds the alert evaluator's lease.
	AlertingBucket = "stacklens_alerting"
	// ConfigBucket holds settings the API distributes to the stateless
	// processors: the SLO latency thresholds (SLOThresholdsKey).
	ConfigBucket = "stacklens_config"
	// SLOThresholdsKey holds the sorted JSON array of the latency
	// thresholds (ms) of the enabled latency SLOs, which the processors
	// count exactly (docs/processor.md).
	SLOThresholdsKey = "slo.latency_thresholds"
)

// Headers set on stream messages.
const (
	HdrKafkaTopic     = "Kafka-Topic"
	HdrKafkaPartition = "Kafka-Partition"
	HdrKafkaOffset    = "Kafka-Offset"
	HdrKafkaKey       = "Kafka-Key"
	HdrKafkaTime      = "Kafka-Timestamp"
	HdrDLQReason      = "Dlq-Reason"
	HdrDLQError       = "Dlq-Error"
	HdrDLQStage       = "Dlq-Stage"
	HdrOriginalSize   = "Dlq-Original-Size"
)

// EventSubject is stacklens.events.<shard>.<service-token>.
func EventSubject(shard int, service string) string {
	return EventsPrefix + strconv.Itoa(shard) + "." + event.ServiceToken(service)
}

// ShardFilter matches every event of one shard.
func ShardFilter(shard int) string { return EventsPrefix + strconv.Itoa(shard) + ".>" }

// OffsetSubject is the checkpoint subject of one Kafka partition.
func OffsetSubject(topic string, partition int) string {
	return OffsetsPrefix + event.ServiceToken(topic) + "." + strconv.Itoa(partition)
}

// DLQSubject is stacklens.dlq.<stage>.<reason>.
func DLQSubject(stage string, reason event.Reason) string {
	return DLQPrefix + stage + "." + string(reason)
}

// AggBucket is the KV bucket of one window's aggregates.
func AggBucket(window string) string { return "stacklens_agg_" + window }
