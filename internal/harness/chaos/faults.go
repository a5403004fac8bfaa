package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Mode is what a link does to the bytes crossing it.
type Mode int

// Link modes, in the spirit of toxiproxy's toxics.
const (
	// Pass forwards bytes unchanged.
	Pass Mode = iota
	// Latency delays every chunk by Link.Delay in each direction.
	Latency
	// Blackhole accepts connections and bytes but forwards nothing (a
	// partition that makes clients time out rather than fail fast).
	Blackhole
	// Reset closes every connection with a TCP RST and refuses new ones
	// (accepted, then reset at once).
	Reset
	// Bandwidth limits each direction of each connection to Link.BytesPerSec.
	Bandwidth
)

func (m Mode) String() string {
	return [...]string{"pass", "latency", "blackhole", "reset", "bandwidth"}[m]
}

// Link is a fault-injecting TCP proxy in front of one upstream address:
// clients connect to Addr(), the proxy dials Upstream.
type Link struct {
	Name     string
	Upstream string

	ln net.Listener

	mu          sync.Mutex
	mode        Mode
	delay       time.Duration
	bytesPerSec int
	conns       map[net.Conn]struct{}
	changed     chan struct{} // closed and replaced on every mode change
	closed      bool
}

// NewLink listens on a free loopback port (or addr when not empty) and
// proxies to upstream.
func NewLink(name, addr, upstream string) (*Link, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &Link{Name: name, Upstream: upstream, ln: ln, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	go l.accept()
	return l, nil
}

// Addr is the address clients should dial.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Set switches the link's mode; delay is used by Latency, bps by Bandwidth.
// Entering Reset resets every open connection.
func (l *Link) Set(m Mode, delay time.Duration, bps int) {
	l.mu.Lock()
	l.mode, l.delay, l.bytesPerSec = m, delay, bps
	close(l.changed)
	l.changed = make(chan struct{})
	var victims []net.Conn
	if m == Reset {
		for c := range l.conns {
			victims = append(victims, c)
		}
	}
	l.mu.Unlock()
	for _, c := range victims {
		resetConn(c)
	}
}

// Heal puts the link back to Pass.
func (l *Link) Heal() { l.Set(Pass, 0, 0) }

// Close stops the proxy and drops every connection.
func (l *Link) Close() {
	l.mu.Lock()
	l.closed = true
	var all []net.Conn
	for c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	_ = l.ln.Close()
	for _, c := range all {
		_ = c.Close()
	}
}

func (l *Link) state() (Mode, time.Duration, int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode, l.delay, l.bytesPerSec, l.changed
}

func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (l *Link) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		if l.closed {
			return false
		}
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
	return true
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.serve(c)
	}
}

func (l *Link) serve(client net.Conn) {
	if m, _, _, _ := l.state(); m == Reset {
		resetConn(client)
		return
	}
	up, err := net.DialTimeout("tcp", l.Upstream, 5*time.Second)
	if err != nil {
		resetConn(client)
		return
	}
	if !l.track(client, true) || !l.track(up, true) {
		_ = client.Close()
		_ = up.Close()
		return
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			_ = client.Close()
			_ = up.Close()
			l.track(client, false)
			l.track(up, false)
		})
	}
	go func() { l.pipe(up, client); done() }()
	l.pipe(client, up)
	done()
}

// pipe copies src → dst applying the link's current mode to every chunk.
func (l *Link) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.gate(n) {
				resetConn(dst)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				resetConn(dst)
			}
			return
		}
	}
}

// gate applies the current mode to a chunk of n bytes about to cross the
// link: it waits as the mode says and returns false when the connection
// must be reset.
func (l *Link) gate(n int) bool {
	for {
		m, delay, bps, changed := l.state()
		switch m {
		case Pass:
			return true
		case Latency:
			select {
			case <-time.After(delay):
			case <-changed:
			}
			return true
		case Blackhole:
			// Hold the bytes until the link changes; they are then
			// delivered (a blackhole that heals is a long stall).
			<-changed
		case Reset:
			return false
		case Bandwidth:
			if bps <= 0 {
				bps = 1024
			}
			select {
			case <-time.After(time.Duration(n) * time.Second / time.Duration(bps)):
			case <-changed:
			}
			return true
		}
	}
}

// WrapListener makes a fault link out of a server's own listener: every
// accepted connection passes through the link's modes (used for kfake,
// whose advertised address must stay the one clients dial, so a proxy in
// front of it would be bypassed after the metadata request).
func WrapListener(name string, ln net.Listener) (*Link, net.Listener) {
	l := &Link{Name: name, Upstream: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	return l, &faultListener{Listener: ln, l: l}
}

type faultListener struct {
	net.Listener
	l *Link
}

func (f *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if m, _, _, _ := f.l.state(); m == Reset {
			resetConn(c)
			continue
		}
		if !f.l.track(c, true) {
			_ = c.Close()
			continue
		}
		return &faultConn{Conn: c, l: f.l}, nil
	}
}

type faultConn struct {
	net.Conn
	l    *Link
	once sync.Once
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.l.gate(n) {
		resetConn(c.Conn)
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *faultConn) Write(p []byte) (int, error) {
	if !c.l.gate(len(p)) {
		resetConn(c.Conn)
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.once.Do(func() { c.l.track(c.Conn, false) })
	return c.Conn.Close()
}

// RewindGroup commits offset 0 for every partition of topic in the
// consumer group (which must have no live member): the next consumer is
// asked to re-read everything, as after a Kafka offset reset or a lost
// commit — redelivery of messages the stream already holds.
func RewindGroup(ctx context.Context, addr, group, topic string, partitions int) error {
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second}
	var offs []kafka.OffsetCommit
	for p := range partitions {
		offs = append(offs, kafka.OffsetCommit{Partition: p, Offset: 0})
	}
	resp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: offs}})
	if err != nil {
		return err
	}
	for _, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("rewind partition %d: %w", p.Partition, p.Error)
			}
		}
	}
	return nil
}
