package testenv

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/embedded"
)

// NATSServer is an in-process JetStream server owned by one test.
type NATSServer struct {
	t        testing.TB
	Server   *server.Server
	URL      string
	StoreDir string
	port     int
}

// NATS starts a JetStream server on a free port with its store in a temp
// dir; it is shut down when the test ends.
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &NATSServer{t: t, StoreDir: t.TempDir(), port: port}
	n.start()
	t.Cleanup(n.Shutdown)
	return n
}

func (n *NATSServer) start() {
	n.t.Helper()
	s, err := embedded.StartNATS(embedded.NATSOptions{Port: n.port, StoreDir: n.StoreDir})
	if err != nil {
		n.t.Fatal(err)
	}
	n.Server = s
	n.URL = s.ClientURL()
}

// Shutdown stops the server (clients see a disconnect).
func (n *NATSServer) Shutdown() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port with the
// same store, as an operator's restart would.
func (n *NATSServer) Restart() {
	n.t.Helper()
	n.Shutdown()
	n.start()
}

// Conn connects a client that reconnects forever; closed at test end.
func (n *NATSServer) Conn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a fresh connection.
func (n *NATSServer) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(n.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	return js
}
