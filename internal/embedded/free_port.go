package embedded

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// portFloor is the lowest port FreePort hands out: above the registered
// services most hosts run.
const portFloor = 10000

// ephemeralRangeFile names the kernel's range for outgoing connections'
// local ports; a variable so tests can point it elsewhere.
var ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// FreePort returns a TCP port on loopback that is free now. It is chosen
// below the kernel's ephemeral range when there is room: a port from that
// range (what listening on port 0 gives) is also the local port of every
// outgoing connection, so under load a client socket takes it between
// this call and the server's bind more often than one would think.
func FreePort() (int, error) {
	if low := ephemeralLow(); low-portFloor >= 1000 {
		for range 64 {
			p := portFloor + rand.IntN(low-portFloor)
			if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
				_ = l.Close()
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of the ephemeral range, 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile(ephemeralRangeFile)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}
