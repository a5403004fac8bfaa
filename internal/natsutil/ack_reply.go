package natsutil

import (
	"strconv"
	"strings"
)

// AckReply is what a JetStream message's reply subject says about it.
type AckReply struct {
	StreamSeq uint64 // the message's stream sequence
	Pending   uint64 // messages left for the consumer after this one
	Timestamp int64  // when the message entered the stream, Unix ns
}

// ParseAckReply reads a JetStream ack subject, in both the v1 form
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> and
// the v2 form
// $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>.
// It reads the numbers from the end without allocating, which the
// client's Metadata (a struct, the names as strings) does not: consumers
// call it for every message.
func ParseAckReply(s string) (AckReply, bool) {
	if !strings.HasPrefix(s, "$JS.ACK.") {
		return AckReply{}, false
	}
	n := strings.Count(s, ".") + 1
	skip := 0 // tokens after <pending>
	switch {
	case n == 9:
	case n >= 11 && n <= 12:
		skip = n - 11
	default:
		return AckReply{}, false
	}
	// Walk back over the last tokens: [skip…], pending, ts, cseq, sseq.
	var toks [4]string
	end := len(s)
	for i := 0; i < skip+4; i++ {
		dot := strings.LastIndexByte(s[:end], '.')
		if i >= skip {
			toks[i-skip] = s[dot+1 : end]
		}
		end = dot
	}
	pending, ok1 := parseUint(toks[0])
	ts, ok2 := parseUint(toks[1])
	seq, ok3 := parseUint(toks[3])
	if !ok1 || !ok2 || !ok3 {
		return AckReply{}, false
	}
	return AckReply{StreamSeq: seq, Pending: pending, Timestamp: int64(ts)}, true
}

// parseUint reads a decimal of at most 19 digits, as the client's parser
// does (strconv allocates only for its error, on input that never comes
// from a server).
func parseUint(s string) (uint64, bool) {
	if len(s) > 19 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}
