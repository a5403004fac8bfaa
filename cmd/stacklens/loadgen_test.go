package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestLoadgenMetricsServesProfiles: `stacklens loadgen --metrics` serves
// the roles' metrics server while it produces, so that `stacklens bench`
// can take a CPU profile of the generator; it is gone once the generator
// is done, and without the flag there is none.
func TestLoadgenMetricsServesProfiles(t *testing.T) {
	broker := testenv.Kafka(t, 2, "loadgen-in")
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"ENV_FILE": writeEmpty(t), "METRICS_PORT": strconv.Itoa(port), "METRICS_HOST": "127.0.0.1", "LOG_LEVEL": "warn",
		"KAFKA_BOOTSTRAP_SERVERS": strings.Join(broker.Brokers, ","), "KAFKA_INPUT_TOPIC": "loadgen-in",
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	run := func(args ...string) chan int {
		done := make(chan int, 1)
		go func() {
			done <- dispatch(context.Background(), &cli{args: append([]string{"loadgen", "--rate", "50", "--services", "2"}, args...),
				stdout: io.Discard, stderr: io.Discard, env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
		}()
		return done
	}
	get := func(path string) (int, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}

	done := run("--metrics", "--duration", "4s")
	testenv.Eventually(t, 30*time.Second, func() error {
		if code, err := get("/ready"); err != nil || code != http.StatusOK {
			return fmt.Errorf("ready: %d %v", code, err)
		}
		return nil
	})
	if code, err := get("/debug/pprof/profile?seconds=1"); err != nil || code != http.StatusOK {
		t.Errorf("CPU profile: %d %v", code, err)
	}
	if code := <-done; code != exitOK {
		t.Fatalf("loadgen exit %d", code)
	}
	if _, err := get("/ready"); err == nil {
		t.Error("the metrics server is still up after the generator ended")
	}

	done = run("--duration", "2s")
	testenv.Eventually(t, 10*time.Second, func() error {
		select {
		case code := <-done:
			done <- code
			return nil
		default:
		}
		if _, err := get("/ready"); err == nil {
			t.Fatal("a metrics server without --metrics")
		}
		return fmt.Errorf("still producing")
	})
	if code := <-done; code != exitOK {
		t.Fatalf("loadgen exit %d", code)
	}
}
