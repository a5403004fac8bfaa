// Package embedded starts StackLens's infrastructure in-process or as local
// child processes: NATS JetStream (nats-server/v2), a Kafka-protocol broker
// (franz-go's kfake) and a private PostgreSQL cluster from the local
// binaries. `stacklens dev` and the tests (internal/harness/testenv) both use it.
package embedded
