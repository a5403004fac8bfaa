package main

import (
	_ "unsafe" // go:linkname

	// Linked for the nats-server and dev commands; its init starts the
	// sampler below in every command.
	_ "github.com/nats-io/nats-server/v2/server/pse"
)

// pseProcStatFile is the path nats-server's pse package samples. Its init
// (linked into every command because the binary embeds a NATS server for
// `nats-server` and `dev`) reads /proc/self/stat and re-arms a one-second
// timer for ever, for the server's /varz CPU figure; it stops re-arming
// once the read fails. docs/PERFORMANCE.md measured it at 1.5 µs per event
// at 2 000 ev/s in the roles, which never serve /varz.
//
//go:linkname pseProcStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var pseProcStatFile string

// embedsNATSServer lists the commands that run a NATS server in their own
// process and so need the sampler.
var embedsNATSServer = map[string]bool{"nats-server": true, "dev": true, "bench": true}

// stopPSESampler ends the sampler in commands without an embedded NATS
// server. Called from main only, at start-up, long before the sampler's
// first re-armed read one second after init.
func stopPSESampler(args []string) bool {
	if len(args) == 0 || embedsNATSServer[args[0]] {
		return false
	}
	pseProcStatFile = ""
	return true
}
