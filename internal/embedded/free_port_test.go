package embedded

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestFreePortBelowEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	if low-portFloor < 1000 {
		t.Fatalf("ephemeral range starts at %d: no room below it on this host", low)
	}
	for range 20 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < portFloor || p >= low {
			t.Fatalf("port %d outside [%d, %d)", p, portFloor, low)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d handed out but not free: %v", p, err)
		}
		_ = l.Close()
	}
}

func TestFreePortWithoutRoomFallsBackToKernel(t *testing.T) {
	for _, content := range []string{"1024 60999\n", "garbage\n", "x 1\n"} {
		f := filepath.Join(t.TempDir(), "range")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		old := ephemeralRangeFile
		ephemeralRangeFile = f
		p, err := FreePort()
		ephemeralRangeFile = old
		if err != nil || p == 0 {
			t.Fatalf("%q: port %d, %v", content, p, err)
		}
	}
	old := ephemeralRangeFile
	ephemeralRangeFile = filepath.Join(t.TempDir(), "missing")
	defer func() { ephemeralRangeFile = old }()
	if ephemeralLow() != 0 {
		t.Fatal("a missing range file must read as unknown")
	}
}

// TestPostgresPicksAnotherPortWhenTaken: a port that another process binds
// between the choice and the postmaster's bind makes the start choose
// again instead of failing.
func TestPostgresPicksAnotherPortWhenTaken(t *testing.T) {
	needRootPostgres(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	freePort = func() (int, error) {
		calls++
		if calls == 1 {
			return taken, nil
		}
		return FreePort()
	}
	defer func() { freePort = FreePort }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := StartPostgres(ctx, PostgresOptions{Dir: searchableTempDir(t, "stacklens-pg-port-")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pg.Stop() }()
	if calls != 2 || pg.Port() == taken {
		t.Fatalf("port %d after %d choices; the taken one was %d", pg.Port(), calls, taken)
	}
	if !pg.ready(ctx) {
		t.Fatal("cluster not serving on its second port")
	}
}
