package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres means no PostgreSQL server binaries were found.
var ErrNoPostgres = errors.New("no PostgreSQL binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin")

// PostgresOptions configure a private PostgreSQL cluster.
type PostgresOptions struct {
	Dir  string // cluster directory (data/ and the log live below it)
	Host string // default 127.0.0.1
	Port int    // 0: any free port
	// Fsync off speeds up throwaway test clusters; commits still reach the
	// OS before they are acknowledged, so a killed server loses nothing.
	Fsync bool
	// HBA lines put before the default trust rules of pg_hba.conf at
	// initialisation, e.g. to make some roles log in with a password.
	HBA []string
	// ShadowBase is where the data directory goes when running as root and
	// the "postgres" user cannot reach Dir (a clone under /root, mode
	// 0700); "" means DefaultShadowBase. See StartPostgres.
	ShadowBase string
	Log        *slog.Logger
}

// DefaultShadowBase holds the data directories of clusters whose Dir the
// postgres user cannot reach. It is persistent storage (not /tmp or
// /var/tmp, whose old files systemd-tmpfiles deletes), so a dev stack keeps
// its data across restarts and reboots.
const DefaultShadowBase = "/var/lib/stacklens/postgres"

// Postgres is a running private cluster. Its superuser is "postgres" and
// authentication is trust on loopback only.
type Postgres struct {
	dir, bin, host string
	data           string // the data directory: dir/data, or its shadow
	work           string // the server's working and home directory
	port           int
	fsync          bool
	cred           *syscall.Credential
	log            *slog.Logger
	cmd            *exec.Cmd
	done           chan struct{}
}

// FindPostgresBin returns the directory holding initdb and postgres: PATH
// first, else the newest /usr/lib/postgresql/*/bin.
func FindPostgresBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func pgVersion(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// StartPostgres initialises (first time) and starts a cluster in o.Dir.
// PostgreSQL refuses to run as root, so when root the cluster is owned by
// and run as the "postgres" OS user. If that user cannot reach o.Dir (a
// parent is not searchable by others, such as /root), the data directory
// lives under o.ShadowBase instead, in a directory named after o.Dir, and
// o.Dir/data is a symbolic link to it: a restart from o.Dir finds the same
// data, and removing o.Dir orphans the shadow, which the next such start
// deletes (see sweepShadows). The log stays in o.Dir.
func StartPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	bin, err := FindPostgresBin()
	if err != nil {
		return nil, err
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, host: o.Host, port: o.Port, fsync: o.Fsync, log: o.Log,
		data: filepath.Join(dir, "data"), work: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded postgres: %w", err)
	}
	if os.Geteuid() == 0 {
		if p.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
		if why := checkTraversable(dir); why != nil {
			base := o.ShadowBase
			if base == "" {
				base = DefaultShadowBase
			}
			if p.data, err = p.shadowData(base); err != nil {
				return nil, err
			}
			p.work = filepath.Dir(p.data)
			o.Log.Info("the postgres user cannot reach the cluster directory; keeping its data in a shadow directory",
				"dir", dir, "data", p.data, "why", why)
		}
	}
	data := p.data
	if err := p.chown(dir); err != nil {
		return nil, err
	}
	if err := p.chown(p.work); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		o.Log.Info("initialising PostgreSQL cluster", "dir", data)
		if err := p.run(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"); err != nil {
			return nil, err
		}
		if len(o.HBA) > 0 {
			hba := filepath.Join(data, "pg_hba.conf")
			old, err := os.ReadFile(hba)
			if err != nil {
				return nil, fmt.Errorf("embedded postgres: %w", err)
			}
			if err := os.WriteFile(hba, append([]byte(strings.Join(o.HBA, "\n")+"\n"), old...), 0o600); err != nil {
				return nil, fmt.Errorf("embedded postgres: %w", err)
			}
			if err := p.chown(hba); err != nil {
				return nil, err
			}
		}
	}
	// A port chosen here is only free when chosen: another process may
	// bind it before the postmaster does, so a lost race picks again.
	auto := o.Port == 0
	for attempt := 1; ; attempt++ {
		if auto {
			if p.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = p.start(ctx)
		if err == nil {
			return p, nil
		}
		if !auto || !errors.Is(err, errPortTaken) || attempt == 5 {
			return nil, err
		}
		o.Log.Info("port taken before the postmaster bound it; choosing another", "port", p.port)
	}
}

// freePort is FreePort; tests make it hand out a taken port.
var freePort = FreePort

// errPortTaken marks a start-up that failed because the port was in use.
var errPortTaken = errors.New("port already in use")

// start runs the postmaster as a child in its own process group (so a
// terminal's Ctrl-C reaches it only through Stop, in order) that gets
// SIGQUIT if this process dies, so no cluster outlives its owner.
func (p *Postgres) start(ctx context.Context) error {
	data := p.data
	logf, err := os.OpenFile(filepath.Join(p.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("embedded postgres: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", data,
		"-c", "listen_addresses="+p.host, "-p", strconv.Itoa(p.port),
		"-c", "unix_socket_directories=", "-c", "max_connections=200",
		"-c", "fsync="+onOff(p.fsync),
		"-c", "full_page_writes="+onOff(p.fsync))
	cmd.Dir = p.work
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT, Credential: p.cred}
	if p.cred != nil {
		cmd.Env = append(os.Environ(), "HOME="+p.work)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("embedded postgres: %w", err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
			if int64(len(b)) >= logStart {
				b = b[logStart:]
			}
			if bytes.Contains(b, []byte("Address already in use")) {
				return fmt.Errorf("embedded postgres: server exited during start-up: %w on %s:%d:\n%s", errPortTaken, p.host, p.port, tail(b, 2000))
			}
			return fmt.Errorf("embedded postgres: server exited during start-up:\n%s", tail(b, 2000))
		case <-ctx.Done():
			_ = p.Kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if p.ready(ctx) {
			return nil
		}
		if time.Now().After(deadline) {
			_ = p.Kill()
			return fmt.Errorf("embedded postgres: not accepting connections after 60s on port %d", p.port)
		}
	}
}

func (p *Postgres) ready(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, p.DSN("postgres", "postgres"))
	if err != nil {
		return false
	}
	_ = conn.Close(cctx)
	return true
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Port is the TCP port the cluster listens on.
func (p *Postgres) Port() int { return p.port }

// Dir is the cluster directory.
func (p *Postgres) Dir() string { return p.dir }

// DataDir is the data directory: Dir()/data, or the shadow directory it
// links to (see StartPostgres).
func (p *Postgres) DataDir() string { return p.data }

// DSN returns a connection string for user on database db.
func (p *Postgres) DSN(userName, db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(userName), Host: net.JoinHostPort(p.host, strconv.Itoa(p.port)), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Stop shuts the cluster down (fast mode: rolls back open transactions
// and checkpoints) and waits for it to exit.
func (p *Postgres) Stop() error { return p.signal(syscall.SIGINT) }

// Kill stops the cluster at once, like a crash (fault tests); it recovers
// from its WAL on the next start.
func (p *Postgres) Kill() error { return p.signal(syscall.SIGQUIT) }

func (p *Postgres) signal(sig syscall.Signal) error {
	if p.cmd == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("embedded postgres: signal: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("embedded postgres: did not stop within 60s; killed")
	}
}

// Restart starts a stopped cluster again on the same port.
func (p *Postgres) Restart(ctx context.Context) error { return p.start(ctx) }

func (p *Postgres) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Dir = p.work
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.cred != nil {
		cmd.SysProcAttr.Credential = p.cred
		cmd.Env = append(os.Environ(), "HOME="+p.work)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("embedded postgres: %s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (p *Postgres) chown(dir string) error {
	if p.cred == nil {
		return nil
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(p.cred.Uid), int(p.cred.Gid))
	})
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("embedded postgres: running as root needs a 'postgres' OS user to own the cluster: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// shadowOwnerFile, in a shadow directory, names the link that uses it.
const shadowOwnerFile = "stacklens-owner"

// shadowData returns the data directory of a cluster whose directory the
// postgres user cannot reach: the target of p.dir/data when that is already
// a link (a restart), else a new directory under base, named after p.dir,
// that p.dir/data is made to link to. Orphaned shadows are swept first.
func (p *Postgres) shadowData(base string) (string, error) {
	link := filepath.Join(p.dir, "data")
	if st, err := os.Lstat(link); err == nil {
		if st.Mode()&os.ModeSymlink == 0 {
			return "", fmt.Errorf("embedded postgres: %s is a directory the postgres user cannot reach; move the cluster directory elsewhere or remove it to start afresh", link)
		}
		target, err := os.Readlink(link)
		if err != nil {
			return "", fmt.Errorf("embedded postgres: %w", err)
		}
		// The shadow itself is the postgres user's; its parents must be
		// searchable.
		if err := checkTraversable(filepath.Dir(target)); err != nil {
			return "", err
		}
		// A missing target (deleted by hand) is initialised afresh.
		if err := p.makeShadow(filepath.Dir(target), link); err != nil {
			return "", err
		}
		return target, nil
	}
	if err := os.MkdirAll(base, 0o711); err != nil {
		return "", fmt.Errorf("embedded postgres: shadow directory: %w", err)
	}
	if err := checkTraversable(filepath.Join(base, "x")); err != nil {
		return "", err
	}
	sweepShadows(base, p.log)
	// Named after the path, readable for an operator, unique by the hash.
	name := strings.ReplaceAll(strings.Trim(p.dir, "/"), "/", "_")
	if len(name) > 64 {
		name = name[len(name)-64:]
	}
	sum := sha256.Sum256([]byte(p.dir))
	shadow := filepath.Join(base, name+"-"+hex.EncodeToString(sum[:6]))
	target := filepath.Join(shadow, "data")
	// The link comes first, so a concurrent sweep never sees the shadow
	// without its owner.
	if err := os.Symlink(target, link); err != nil {
		return "", fmt.Errorf("embedded postgres: %w", err)
	}
	if err := p.makeShadow(shadow, link); err != nil {
		return "", err
	}
	return target, nil
}

// makeShadow creates the shadow directory (0700, owned by postgres) and
// records the link that owns it.
func (p *Postgres) makeShadow(shadow, link string) error {
	if err := os.MkdirAll(shadow, 0o700); err != nil {
		return fmt.Errorf("embedded postgres: shadow directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(shadow, shadowOwnerFile), []byte(link+"\n"), 0o600); err != nil {
		return fmt.Errorf("embedded postgres: shadow directory: %w", err)
	}
	return nil
}

// sweepShadows deletes the shadow directories under base whose owning link
// is gone or points elsewhere (the cluster directory was removed, e.g.
// rm -rf .data), unless their server is still running.
func sweepShadows(base string, log *slog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		shadow := filepath.Join(base, e.Name())
		owner, err := os.ReadFile(filepath.Join(shadow, shadowOwnerFile))
		if err != nil {
			continue // not ours
		}
		link := strings.TrimSpace(string(owner))
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(shadow, "data") {
			continue
		}
		if serverRunning(filepath.Join(shadow, "data")) {
			continue
		}
		log.Info("removing the orphaned shadow data directory of a deleted cluster", "shadow", shadow, "link", link)
		if err := os.RemoveAll(shadow); err != nil {
			log.Warn("cannot remove an orphaned shadow data directory", "shadow", shadow, "err", err)
		}
	}
}

// serverRunning reports whether postmaster.pid in data names a live process.
func serverRunning(data string) bool {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return err == nil && pid > 0 && syscall.Kill(pid, 0) == nil
}

// checkTraversable makes sure the postgres user can reach dir: every
// existing parent must be searchable by others.
func checkTraversable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("embedded postgres: %s is not searchable by the postgres user (mode %v)", d, st.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}
