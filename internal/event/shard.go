package event

// FNV-1a 32-bit parameters (the same as hash/fnv's New32a).
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

// Shard returns the shard of a service: fnv1a32(service bytes) mod shards,
// the shard in the subject stacklens.events.<shard>.<service-token>. It is
// the same value as hash/fnv's New32a over the name, computed without
// allocating. It is part of the stream's data layout and must never change.
// shards must be at least 1; Shard panics otherwise (a configuration error
// that the caller should have rejected).
func Shard(service string, shards int) int {
	if shards < 1 {
		panic("event: Shard with shards < 1")
	}
	h := uint32(fnvOffset32)
	for i := 0; i < len(service); i++ {
		h ^= uint32(service[i])
		h *= fnvPrime32
	}
	return int(uint64(h) % uint64(shards))
}
