package embedded

import (
	"testing"
	"time"
)

// TestStartNATSSyncPolicy: the fsync policy reaches the server's JetStream.
func TestStartNATSSyncPolicy(t *testing.T) {
	for _, o := range []NATSOptions{{SyncAlways: true}, {SyncInterval: 10 * time.Second}} {
		o.Port, o.StoreDir = -1, t.TempDir()
		s, err := StartNATS(o)
		if err != nil {
			t.Fatal(err)
		}
		jc := s.JetStreamConfig()
		s.Shutdown()
		if jc == nil || jc.SyncAlways != o.SyncAlways || (o.SyncInterval != 0 && jc.SyncInterval != o.SyncInterval) {
			t.Errorf("options %+v: server JetStream %+v", o, jc)
		}
	}
}
