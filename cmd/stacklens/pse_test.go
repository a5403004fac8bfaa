package main

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server/pse"
)

// The roles must stop nats-server's /proc sampler (pse.ProcUsage fails
// once its path is cleared, and the sampler stops re-arming on the same
// failure); the commands that embed a server keep it.
func TestStopPSESamplerOnlyWithoutAnEmbeddedServer(t *testing.T) {
	saved := pseProcStatFile
	t.Cleanup(func() { pseProcStatFile = saved })
	var pcpu float64
	var rss, vss int64
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err != nil {
		t.Fatalf("sampler path not set by pse's init: %v", err)
	}
	for _, cmd := range []string{"nats-server", "dev", "bench"} {
		if stopPSESampler([]string{cmd}) || pseProcStatFile != saved {
			t.Fatalf("%s: sampler stopped", cmd)
		}
	}
	if !stopPSESampler([]string{"processor"}) {
		t.Fatal("processor: sampler kept")
	}
	if err := pse.ProcUsage(&pcpu, &rss, &vss); err == nil {
		t.Fatal("pse still reads /proc after the stop")
	}
}
