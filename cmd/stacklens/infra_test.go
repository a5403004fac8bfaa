package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// startInfra runs `stacklens <args>` in-process until the test ends and
// waits for its /ready; it returns the metrics port.
func startInfra(t *testing.T, args ...string) {
	t.Helper()
	mport, _ := embedded.FreePort()
	vars := map[string]string{"ENV_FILE": writeEmpty(t), "METRICS_PORT": strconv.Itoa(mport), "DATA_DIR": t.TempDir(), "LOG_LEVEL": "warn"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs testenv.SyncBuffer
	go func() {
		done <- dispatch(ctx, &cli{args: args, stdout: &logs, stderr: &logs, env: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("%s: exit %d\n%s", args[0], code, logs.String())
		}
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("%s exited %d:\n%s", args[0], code, logs.String())
		default:
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(mport) + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %s", resp.Status)
		}
		return nil
	})
}

// TestNATSServerCluster: three `stacklens nats-server` nodes form a
// JetStream cluster that holds an R3 stream, as the partition tests run
// them on separate hosts.
func TestNATSServerCluster(t *testing.T) {
	var client, route [3]int
	for i := range 3 {
		client[i], _ = embedded.FreePort()
		route[i], _ = embedded.FreePort()
	}
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(route[j]))
			}
		}
		startInfra(t, "nats-server", "--port", strconv.Itoa(client[i]), "--name", "n"+strconv.Itoa(i),
			"--cluster-port", strconv.Itoa(route[i]), "--routes", strings.Join(routes, ","))
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d", client[0], client[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testenv.Eventually(t, time.Minute, func() error {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		_, err := js.CreateOrUpdateStream(actx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		return err
	})
	if _, err := js.Publish(ctx, "r3.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(info.Cluster.Replicas) + 1; got != 3 || info.State.Msgs != 1 {
		t.Errorf("stream on %d nodes with %d messages, want 3 and 1", got, info.State.Msgs)
	}
}

func TestNATSServerRoutesNeedClusterPort(t *testing.T) {
	code, _, errs := runCLI(t, context.Background(), map[string]string{"ENV_FILE": writeEmpty(t)}, "nats-server", "--routes", "nats-route://127.0.0.1:1")
	if code != exitConfig || !strings.Contains(errs, "--routes needs --cluster-port") {
		t.Errorf("exit %d: %s", code, errs)
	}
}

// TestKafkaBroker: `stacklens kafka-broker` serves the configured topics.
func TestKafkaBroker(t *testing.T) {
	port, _ := embedded.FreePort()
	startInfra(t, "kafka-broker", "--port", strconv.Itoa(port))
	addr := "127.0.0.1:" + strconv.Itoa(port)
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions("stacklens-analytics", "analytics-alerts")
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2*12 {
		t.Errorf("%d partitions, want 12 for each of the two topics", len(parts))
	}
}
