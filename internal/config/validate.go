package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// Validate checks the rules that span several variables or need parsing
// beyond a single value. Load calls it; tests that build a Config by hand
// should too.
func (c *Config) Validate() error {
	ws, err := window.ParseList(c.Pipeline.Windows)
	if err != nil {
		return &Error{Var: "AGGREGATION_WINDOWS", Msg: err.Error()}
	}
	c.Pipeline.WindowList = ws
	if _, err := c.Pipeline.EventLocation(); err != nil {
		return err
	}
	if len(c.Kafka.BootstrapServers) == 0 {
		return &Error{Var: "KAFKA_BOOTSTRAP_SERVERS", Msg: "at least one broker is required"}
	}
	for _, b := range c.Kafka.BootstrapServers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return &Error{Var: "KAFKA_BOOTSTRAP_SERVERS", Msg: fmt.Sprintf("%q: want host:port", b)}
		}
	}
	if c.Kafka.InputTopic == "" {
		return &Error{Var: "KAFKA_INPUT_TOPIC", Msg: "must not be empty"}
	}
	if c.Kafka.OutputTopic == "" {
		return &Error{Var: "KAFKA_OUTPUT_TOPIC", Msg: "must not be empty"}
	}
	if c.Kafka.SASLMechanism != "" && (c.Kafka.SASLUsername == "" || c.Kafka.SASLPassword == "") {
		return &Error{Var: "KAFKA_SASL_USERNAME", Msg: "KAFKA_SASL_MECHANISM needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"}
	}
	if (c.Kafka.TLSCertFile == "") != (c.Kafka.TLSKeyFile == "") {
		return &Error{Var: "KAFKA_TLS_KEY_FILE", Msg: "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together"}
	}
	if 3*c.Kafka.Heartbeat > c.Kafka.SessionTimeout {
		return &Error{Var: "KAFKA_HEARTBEAT_INTERVAL", Msg: fmt.Sprintf("%v must be at most a third of KAFKA_SESSION_TIMEOUT %v", c.Kafka.Heartbeat, c.Kafka.SessionTimeout)}
	}
	if c.DB.PoolMin > c.DB.PoolMax {
		return &Error{Var: "DB_POOL_MIN", Msg: fmt.Sprintf("%d exceeds DB_POOL_MAX %d", c.DB.PoolMin, c.DB.PoolMax)}
	}
	// The migrator stores role passwords as SCRAM verifiers, for which the
	// clear text must be printable ASCII (SASLprep is then the identity).
	for _, pw := range []struct{ name, v string }{
		{"DB_READER_PASSWORD", c.DB.ReaderPassword}, {"DB_WRITER_PASSWORD", c.DB.WriterPassword}, {"DB_ADMIN_PASSWORD", c.DB.AdminPassword},
	} {
		for _, r := range pw.v {
			if r < 0x20 || r > 0x7e {
				return &Error{Var: pw.name, Msg: "must be printable ASCII (or a SCRAM-SHA-256 verifier)"}
			}
		}
	}
	if c.DB.URL != "" {
		if u, err := url.Parse(c.DB.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return &Error{Var: "DATABASE_URL", Msg: "want postgres://user:password@host:port/dbname"}
		}
	}
	for _, u := range strings.Split(c.NATS.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" {
			return &Error{Var: "NATS_URL", Msg: fmt.Sprintf("%q: want nats://host:port", u)}
		}
	}
	if (c.NATS.TLSCertFile == "") != (c.NATS.TLSKeyFile == "") {
		return &Error{Var: "NATS_TLS_KEY_FILE", Msg: "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together"}
	}
	if _, err := c.API.Credentials(); err != nil {
		return err
	}
	if c.Retention.WarmDays < c.Retention.HotDays {
		return &Error{Var: "RETENTION_WARM", Msg: "must be at least RETENTION_HOT"}
	}
	if c.Retention.ColdDays < c.Retention.WarmDays {
		return &Error{Var: "RETENTION_COLD", Msg: "must be at least RETENTION_WARM"}
	}
	// A window's row is keyed by its start and archived by that start, so a
	// window still open when its start passes the retention would be
	// deleted while it is being written.
	for _, w := range c.Pipeline.WindowList {
		if days := c.Retention.WindowDays(w); w.Size+c.Processor.AllowedLateness >= time.Duration(days)*24*time.Hour {
			return &Error{Var: "AGGREGATION_WINDOWS", Msg: fmt.Sprintf("window %s plus ALLOWED_LATENESS is not shorter than its retention (RETENTION_%s=%d days): its rows would be archived while the window is open",
				w.Name, strings.ToUpper(c.Retention.WindowTier(w)), days)}
		}
	}
	if c.NATS.EventsMaxAge < c.Processor.AllowedLateness {
		return &Error{Var: "EVENTS_MAX_AGE", Msg: "must exceed ALLOWED_LATENESS"}
	}
	// A bound of a few bytes is a unit mistake (MiB meant), and would drop
	// events as soon as they are written.
	if n := c.NATS.EventsMaxBytes; n != 0 && n < minStreamBytes {
		return &Error{Var: "EVENTS_MAX_BYTES", Msg: fmt.Sprintf("must be 0 (no bound) or at least %d (1 MiB), in bytes", minStreamBytes)}
	}
	if n := c.NATS.DLQMaxBytes; n != 0 && n < minStreamBytes {
		return &Error{Var: "DLQ_MAX_BYTES", Msg: fmt.Sprintf("must be 0 (no bound) or at least %d (1 MiB), in bytes", minStreamBytes)}
	}
	if n := c.DB.MaxBytes; n != 0 && n < minStreamBytes {
		return &Error{Var: "DB_MAX_BYTES", Msg: fmt.Sprintf("must be 0 (no bound) or at least %d (1 MiB), in bytes", minStreamBytes)}
	}
	if c.Alerting.SlackWebhookURL != "" {
		if u, err := url.Parse(c.Alerting.SlackWebhookURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return &Error{Var: "SLACK_WEBHOOK_URL", Msg: "want an http(s) URL"}
		}
	}
	if u, err := url.Parse(c.Alerting.PagerDutyURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return &Error{Var: "PAGERDUTY_URL", Msg: "want an http(s) URL"}
	}
	if c.Telemetry.EnableMetrics && c.Telemetry.MetricsPort != 0 && c.Telemetry.MetricsPort == c.API.Port &&
		hostsOverlap(c.Telemetry.MetricsHost, c.API.Host) {
		return &Error{Var: "METRICS_PORT", Msg: fmt.Sprintf("%d is also API_PORT on an overlapping address (METRICS_HOST %q, API_HOST %q): the api role would fail to bind; give them different ports",
			c.Telemetry.MetricsPort, c.Telemetry.MetricsHost, c.API.Host)}
	}
	if _, _, err := c.Runtime.NATSSync(); err != nil {
		return err
	}
	if c.Alerting.SMTPHost != "" && len(c.Alerting.SMTPTo) == 0 {
		return &Error{Var: "SMTP_TO", Msg: "SMTP_HOST is set but no recipient is"}
	}
	return nil
}

// NATSSync is NATS_SYNC_INTERVAL as the embedded server takes it: an fsync
// interval, or always (fsync on every write).
func (r Runtime) NATSSync() (interval time.Duration, always bool, err error) {
	if strings.EqualFold(strings.TrimSpace(r.NATSSyncInterval), "always") {
		return 0, true, nil
	}
	d, perr := time.ParseDuration(strings.TrimSpace(r.NATSSyncInterval))
	if perr != nil || d <= 0 {
		return 0, false, &Error{Var: "NATS_SYNC_INTERVAL", Msg: fmt.Sprintf("%q: want always or a positive duration such as 2m or 10s", r.NATSSyncInterval)}
	}
	return d, false, nil
}

// hostsOverlap reports whether listeners on a and b with the same port
// would collide: the same address, a wildcard on either side, or
// "localhost" against a loopback address.
func hostsOverlap(a, b string) bool {
	norm := func(h string) (ip net.IP, wildcard, local bool) {
		h = strings.Trim(strings.TrimSpace(h), "[]")
		if h == "" {
			return nil, true, false
		}
		if strings.EqualFold(h, "localhost") {
			return nil, false, true
		}
		ip = net.ParseIP(h)
		return ip, ip != nil && ip.IsUnspecified(), false
	}
	ipa, wa, la := norm(a)
	ipb, wb, lb := norm(b)
	switch {
	case wa || wb || (la && lb):
		return true
	case la:
		return ipb != nil && ipb.IsLoopback()
	case lb:
		return ipa != nil && ipa.IsLoopback()
	case ipa != nil && ipb != nil:
		return ipa.Equal(ipb)
	}
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// ErrNotValidated is returned by components given a Config whose Validate
// was never called (no parsed windows): a programming error, not a setting.
var ErrNotValidated = errors.New("config: AGGREGATION_WINDOWS: configuration not validated (call Config.Validate)")

// ValidWindows returns the validated aggregation windows, smallest first, or
// ErrNotValidated.
func (p Pipeline) ValidWindows() ([]window.Window, error) {
	if len(p.WindowList) == 0 {
		return nil, ErrNotValidated
	}
	return p.WindowList, nil
}

// EventLocation returns the zone of naive event timestamps
// (EVENT_TIMEZONE): "UTC" (or empty), "Local", or an IANA zone name, read
// from the system's zoneinfo or the copy embedded in the binary. Errors are
// *Error naming EVENT_TIMEZONE.
func (p Pipeline) EventLocation() (*time.Location, error) {
	name := p.EventTimezone
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, &Error{Var: "EVENT_TIMEZONE", Msg: fmt.Sprintf("%q is not a known time zone: want UTC, Local or an IANA name such as Europe/Berlin", name)}
	}
	return loc, nil
}

// Role of an API credential.
type Role int

// API roles: readers may GET, admins may also write.
const (
	RoleReader Role = iota + 1
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Credentials are the API's keys and basic-auth users.
type Credentials struct {
	Keys  map[string]Role            // bearer key → role
	Users map[string]BasicCredential // user → password, role
}

// BasicCredential is one basic-auth user.
type BasicCredential struct {
	Password string
	Role     Role
}

// Empty reports whether no credential is configured.
func (c Credentials) Empty() bool { return len(c.Keys) == 0 && len(c.Users) == 0 }

// Credentials parses API_READER_KEYS, API_ADMIN_KEYS and API_USERS.
func (a API) Credentials() (Credentials, error) {
	cr := Credentials{Keys: map[string]Role{}, Users: map[string]BasicCredential{}}
	for _, k := range a.ReaderKeys {
		if len(k) < 16 {
			return cr, &Error{Var: "API_READER_KEYS", Msg: "keys must be at least 16 characters"}
		}
		cr.Keys[k] = RoleReader
	}
	for _, k := range a.AdminKeys {
		if len(k) < 16 {
			return cr, &Error{Var: "API_ADMIN_KEYS", Msg: "keys must be at least 16 characters"}
		}
		cr.Keys[k] = RoleAdmin
	}
	for i, u := range a.Users {
		parts := strings.Split(u, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			return cr, &Error{Var: "API_USERS", Msg: "entry " + strconv.Itoa(i+1) + ": want user:password:role"}
		}
		var role Role
		switch parts[2] {
		case "reader":
			role = RoleReader
		case "admin":
			role = RoleAdmin
		default:
			return cr, &Error{Var: "API_USERS", Msg: "entry " + strconv.Itoa(i+1) + ": role must be reader or admin"}
		}
		cr.Users[parts[0]] = BasicCredential{Password: parts[1], Role: role}
	}
	return cr, nil
}

// DSN is the connection string of the main (writer) pool.
func (d DB) DSN() string {
	if d.URL != "" {
		return d.URL
	}
	u := url.URL{
		Scheme: "postgres",
		Host:   net.JoinHostPort(d.Host, strconv.Itoa(d.Port)),
		Path:   "/" + d.Name,
	}
	if d.Password != "" {
		u.User = url.UserPassword(d.User, d.Password)
	} else {
		u.User = url.User(d.User)
	}
	q := url.Values{}
	q.Set("sslmode", d.SSLMode)
	u.RawQuery = q.Encode()
	return u.String()
}

// ReaderDSN is the connection string of the read-only pool, or "" when no
// reader password is configured (the API then uses SET ROLE on the main
// pool's user).
func (d DB) ReaderDSN() string {
	if d.ReaderPassword == "" {
		return ""
	}
	u, err := url.Parse(d.DSN())
	if err != nil {
		return ""
	}
	u.User = url.UserPassword(d.ReaderUser, d.ReaderPassword)
	return u.String()
}

// minStreamBytes is the smallest byte bound of a stream.
const minStreamBytes = 1 << 20
