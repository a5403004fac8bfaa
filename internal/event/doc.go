// Package event is StackLens's event model and edge validation: it turns one
// raw input message (a JSON object from the Kafka topic stacklens-analytics,
// docs/ARCHITECTURE.md §2.1) into a validated [Event], or into a [*DecodeError] whose
// machine-readable [Reason] names the dead-letter reason and the offending
// field. It also holds the two naming rules every component must agree on:
// the subject-safe service token and the shard function (docs/ARCHITECTURE.md §2.2).
//
// # Input contract
//
// [Decode] accepts exactly one JSON object (RFC 8259, UTF-8) and checks, in
// this order, reporting the first failure:
//
//  1. size: len(data) > [Limits].MaxBytes → too_large (without parsing);
//  2. syntax: not JSON, top-level value not an object, trailing data,
//     nesting deeper than 10 000 (as encoding/json) or invalid UTF-8 anywhere
//     except inside the (last) service string, where it is bad_service in
//     step 3 → invalid_json;
//  3. timestamp, service, level, latency_ms, risk_score, each in turn:
//     absent (or null) → missing_field, wrong JSON type → bad_type, bad value
//     → bad_timestamp, bad_service, bad_level or out_of_range;
//  4. timestamp > now+MaxFutureSkew → future_timestamp (exactly at the limit
//     is accepted);
//  5. timestamp < now−Horizon → too_late (exactly at the limit is accepted).
//
// Field rules:
//
//   - timestamp (required): a string, either RFC 3339 with a zone
//     ("2026-11-29T01:00:00.123Z", "…+05:30", "-00:00" is UTC) or ISO 8601
//     without a zone as written by Python's datetime.isoformat()
//     ("2026-11-29T01:00:00.123456", "2026-11-29T01:00:00"), a wall-clock
//     time in [Limits].Location (EVENT_TIMEZONE, default UTC); at a
//     daylight-saving change a repeated wall time is the earlier instant and
//     a skipped one is read with the offset before the change (as Python's
//     zoneinfo with fold=0, the producer's own reading).
//     The separator may be 'T', 't' or a space; the fraction may have any
//     number of digits (truncated to nanoseconds); 'Z' may be lower case;
//     offsets are ±hh:mm. Seconds must be 00–59 (no leap seconds). Or a JSON
//     number of milliseconds since the Unix epoch (fractions allowed,
//     years 0000–9999). A numeric string is not an epoch: it is bad_timestamp.
//   - service (required): a string valid by [ValidService] after unescaping
//     → else bad_service: 1–128 bytes of valid UTF-8, no control character
//     (C0 U+0000–U+001F, DEL U+007F, C1 U+0080–U+009F: they break PostgreSQL
//     text, logs, headers and terminals), no line or paragraph separator
//     (U+2028, U+2029), no whitespace (unicode.IsSpace) at either end, so
//     never blank. The API's service parameter and silence matcher apply the
//     same rule, so every stored name can be queried.
//   - level (required): a string, ASCII case-insensitive, one of debug, info,
//     notice, warning (or warn), error, critical, fatal → else bad_level.
//   - latency_ms (required): a JSON number, ≥ 0 and ≤ [MaxLatencyMS] (10^15
//     ms; 1e300 and 1e400 are out_of_range). The bound is the aggregation
//     kernel's clamp, so an accepted latency is never altered.
//   - risk_score (optional, null means absent): a JSON number, finite, in [0, 1].
//     Numbers are rounded to the nearest float64 first (correctly, for any
//     length), and the range checks apply to that value; -0 becomes 0.
//
// Other members are ignored (the caller keeps the raw payload); their values
// are still checked for JSON syntax and UTF-8, so that every accepted payload
// is well-formed UTF-8 JSON. Object keys are compared after unescaping and
// case-sensitively ("servic\u0065" is service, "Service" is unknown).
//
// Duplicate keys: the last occurrence wins, as in Python's json module,
// JavaScript's JSON.parse and PostgreSQL jsonb, so the event we aggregate is
// the event a reader of the stored raw payload sees. Earlier occurrences must
// still be syntactically valid JSON but their values are not validated.
//
// Note for consumers of the raw payload: escapes such as \u0000 or a lone
// surrogate (\ud800) are valid JSON and are accepted in members other than
// service; PostgreSQL jsonb rejects them, so store the raw payload as bytes
// or sanitise it. In service, a lone surrogate becomes U+FFFD (as in
// encoding/json) and \u0000 is bad_service.
//
// # Service token
//
// A service name appears in NATS subjects (stacklens.events.<shard>.<token>)
// and JetStream KV keys (<token>.<bucket-start>). Both allow only
// [-/_=.a-zA-Z0-9] and we use '.' as separator, so [ServiceToken] escapes:
// every byte in [A-Za-z0-9-] is kept as is; every other byte, including '_'
// and '.', becomes '_' followed by two upper-case hex digits of the byte.
// So "checkout" → "checkout", "a.b" → "a_2Eb", "a_b" → "a_5Fb",
// "café" → "caf_C3_A9". The mapping is injective (each token decodes back to
// one name; '_' only ever starts an escape) and the token matches
// ^[A-Za-z0-9_-]+$ for every non-empty name. [ParseServiceToken] reverses it
// and rejects anything ServiceToken cannot produce (empty, bad characters,
// truncated or lower-case escapes, escapes of bytes that need no escaping).
//
// # Shards
//
// [Shard] is fnv1a32(service bytes) mod shards; it must never change, since
// the shard count is fixed at stream creation and subjects embed the shard.
package event
