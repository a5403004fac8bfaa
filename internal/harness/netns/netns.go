// Package netns makes hosts out of Linux network namespaces for the
// network-partition tests (docs/CHAOS.md): each host is a namespace with
// its loopback up and one veth into a Linux bridge that lives in a
// namespace of its own, so nothing is configured in the root namespace and
// deleting the run's namespaces removes every interface with them. Faults
// need no kernel module: link down, blackhole routes, interface removal,
// namespace deletion.
//
// Names carry the creating process's pid ("slnet<pid>x<n>-<host>"), so Sweep can
// remove what a killed run left behind.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// prefix starts the name of every namespace this package creates.
const prefix = "slnet"

// Available reports why hosts cannot be made here (nil when they can):
// root and the ip tool are needed.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (ip netns add)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip tool (iproute2) is not installed")
	}
	return nil
}

// Net is one run's network: a bridge and the hosts attached to it.
type Net struct {
	id     string // "sl<pid>"
	sw     string // the bridge's namespace
	subnet string // "10.77.<n>."
	sub    int

	mu    sync.Mutex
	hosts map[string]*Host
	next  int
}

// Host is a network namespace attached to the bridge.
type Host struct {
	Name string
	NS   string // namespace name (for ip netns exec)
	IP   string
	mac  string // fixed, so a recreated host keeps its neighbours' ARP entries valid
	veth string // its veth's name in the bridge namespace
	n    *Net

	mu                     sync.Mutex
	down, removed, deleted bool
	holes                  bool
}

func (h *Host) set(f *bool, v bool) {
	h.mu.Lock()
	*f = v
	h.mu.Unlock()
}

// Heal undoes every fault on the host: a deleted host is made again
// (empty: its processes are the caller's to restart), a removed veth
// re-attached, the link brought up, blackhole routes removed.
func (h *Host) Heal() error {
	h.mu.Lock()
	down, removed, deleted, holes := h.down, h.removed, h.deleted, h.holes
	h.mu.Unlock()
	switch {
	case deleted:
		if err := h.Recreate(); err != nil {
			return err
		}
	case removed:
		if err := h.Attach(); err != nil {
			return err
		}
	case down:
		if err := h.LinkUp(); err != nil {
			return err
		}
	}
	if holes && !deleted {
		return h.Unblackhole()
	}
	return nil
}

// Deleted reports whether Delete removed the host (and Heal has not made
// it again).
func (h *Host) Deleted() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deleted
}

// ip runs the ip tool; errors carry its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// New creates the bridge of a run. subnet picks the /24 of 10.77.0.0/16
// (several nets may exist at once in one process).
func New(subnet int) (*Net, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	Sweep()
	id := prefix + strconv.Itoa(os.Getpid()) + "x" + strconv.Itoa(subnet)
	n := &Net{id: id, sw: id + "-sw", subnet: fmt.Sprintf("10.77.%d.", subnet), sub: subnet, hosts: map[string]*Host{}, next: 1}
	for _, args := range [][]string{
		{"netns", "add", n.sw},
		{"-n", n.sw, "link", "set", "lo", "up"},
		{"-n", n.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", n.sw, "link", "set", "br0", "up"},
	} {
		if err := ip(args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// AddHost creates host name (at most 12 characters) with the next address.
func (n *Net) AddHost(name string) (*Host, error) {
	if len(name) > 12 {
		return nil, fmt.Errorf("host name %q: longer than 12 characters (veth names are at most 15)", name)
	}
	if n.next > 250 {
		return nil, errors.New("no address left in the subnet")
	}
	n.mu.Lock()
	if n.hosts[name] != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("host %q exists", name)
	}
	h := &Host{Name: name, NS: n.id + "-" + name, IP: n.subnet + strconv.Itoa(n.next),
		mac: fmt.Sprintf("02:77:%02x:00:00:%02x", n.sub, n.next), veth: "v-" + name, n: n}
	n.next++
	n.hosts[name] = h
	n.mu.Unlock()
	return h, h.create()
}

func (h *Host) create() error {
	for _, args := range [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return h.Attach()
}

// Attach (re)creates the host's veth pair and address after Remove
// deleted it; a host is attached when created.
func (h *Host) Attach() error {
	for _, args := range [][]string{
		{"-n", h.n.sw, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "address", h.mac, "netns", h.NS},
		{"-n", h.n.sw, "link", "set", h.veth, "master", "br0"},
		{"-n", h.n.sw, "link", "set", h.veth, "up"},
		{"-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.removed, h.down = false, false
	h.mu.Unlock()
	return nil
}

// Hosts lists the hosts by name.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Host, 0, len(n.hosts))
	for _, h := range n.hosts {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LinkDown takes the host's port on the bridge down: it is cut off from
// every other host (its own interface stays up, so its sockets see
// silence, not errors).
func (h *Host) LinkDown() error {
	h.set(&h.down, true)
	return ip("-n", h.n.sw, "link", "set", h.veth, "down")
}

// LinkUp undoes LinkDown.
func (h *Host) LinkUp() error {
	if err := ip("-n", h.n.sw, "link", "set", h.veth, "up"); err != nil {
		return err
	}
	h.set(&h.down, false)
	return nil
}

// Blackhole drops, inside h, everything addressed to the peers: h can no
// longer reach them, nor answer them (a one-host cut that leaves the
// peers' other links alone).
func (h *Host) Blackhole(peers ...*Host) error {
	h.set(&h.holes, true)
	for _, p := range peers {
		if err := ip("-n", h.NS, "route", "add", "blackhole", p.IP+"/32"); err != nil {
			return err
		}
	}
	return nil
}

// Unblackhole removes h's blackhole routes (all of them).
func (h *Host) Unblackhole() error {
	out, err := exec.Command("ip", "-n", h.NS, "route", "show", "type", "blackhole").Output()
	if err != nil {
		return fmt.Errorf("ip -n %s route show: %w", h.NS, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "blackhole" {
			if err := ip("-n", h.NS, "route", "del", "blackhole", f[1]); err != nil {
				return err
			}
		}
	}
	h.set(&h.holes, false)
	return nil
}

// Remove deletes the host's veth pair (the interface is gone, not just
// down); Attach brings a new one.
func (h *Host) Remove() error {
	h.set(&h.removed, true)
	return ip("-n", h.n.sw, "link", "del", h.veth)
}

// Kill SIGKILLs every process in the host's namespace, and the process
// group each leads (Command starts every process as a group leader).
func (h *Host) Kill() {
	out, _ := exec.Command("ip", "netns", "pids", h.NS).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Delete removes the host outright: its processes are killed and its
// namespace (with its veth pair) deleted. Recreate brings an empty host
// with the same name and address back.
func (h *Host) Delete() error {
	h.set(&h.deleted, true)
	h.Kill()
	// The namespace itself goes when its last process has exited; its
	// veth is deleted now so that Recreate can make a new one.
	_ = ip("-n", h.n.sw, "link", "del", h.veth)
	return ip("netns", "del", h.NS)
}

// Recreate makes a deleted host again (same name and address).
func (h *Host) Recreate() error {
	if err := h.create(); err != nil {
		return err
	}
	h.mu.Lock()
	h.deleted, h.holes = false, false
	h.mu.Unlock()
	return nil
}

// Command runs name inside the host (ip netns exec). The process leads its
// own process group and gets SIGKILL when the test process dies.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Argv is the command prefix that runs a program inside the host.
func (h *Host) Argv() []string { return []string{"ip", "netns", "exec", h.NS} }

// DialContext connects from inside the host, so the test process's clients
// (producer, checker) sit on the network like any other host. The socket is
// made on a locked thread moved into the namespace and moved back before
// it is unlocked. A thread that cannot be moved back is never returned to
// the scheduler (the goroutine exits locked, so the runtime ends it); every
// other path unlocks it, because ending a thread also SIGKILLs the children
// it forked with Pdeathsig: role processes of the harness (a dial to a
// deleted host ended its thread and killed a processor started on it).
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		moved := false
		defer func() {
			if !moved {
				runtime.UnlockOSThread()
			}
		}()
		home, err := os.Open("/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net")
		if err != nil {
			ch <- res{nil, fmt.Errorf("host %s: %w", h.Name, err)}
			return
		}
		defer home.Close()
		f, err := os.Open("/run/netns/" + h.NS)
		if err != nil {
			ch <- res{nil, fmt.Errorf("host %s: %w", h.Name, err)}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("host %s: setns: %w", h.Name, err)}
			return
		}
		moved = true
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- res{c, err}
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			moved = false
		}
	}()
	r := <-ch
	return r.c, r.err
}

// Close kills every process in the run's hosts and deletes the namespaces
// (their veths go with them).
func (n *Net) Close() {
	for _, h := range n.Hosts() {
		h.Kill()
		_ = ip("netns", "del", h.NS)
	}
	_ = ip("netns", "del", n.sw)
}

// Sweep removes the namespaces of runs whose process is gone (a test that
// was killed never ran its cleanup): their processes get SIGKILL, the
// namespaces are deleted.
func Sweep() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		name := f[0]
		digits := strings.TrimPrefix(name, prefix)
		end := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' })
		if end <= 0 {
			continue
		}
		pid, _ := strconv.Atoi(digits[:end])
		if err := syscall.Kill(pid, 0); pid == os.Getpid() || err == nil || errors.Is(err, syscall.EPERM) {
			continue // a live run's
		}
		(&Host{NS: name}).Kill()
		_ = ip("netns", "del", name)
	}
}
