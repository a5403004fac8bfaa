package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// load reads env and args with an empty .env file (an explicitly named
// file that is missing is an error).
func load(t *testing.T, env map[string]string, args ...string) (*Loaded, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return Load("test", args, Options{LookupEnv: envOf(env), EnvFile: f, Output: &bytes.Buffer{}})
}

func mustLoad(t *testing.T, env map[string]string, args ...string) *Loaded {
	t.Helper()
	l, err := load(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDefaults(t *testing.T) {
	l := mustLoad(t, nil)
	c := l.Config
	if got := c.Kafka.BootstrapServers; len(got) != 1 || got[0] != "127.0.0.1:9092" {
		t.Errorf("KAFKA_BOOTSTRAP_SERVERS = %v", got)
	}
	if c.Kafka.InputTopic != "stacklens-analytics" || c.Kafka.OutputTopic != "analytics-alerts" {
		t.Errorf("topics %q %q", c.Kafka.InputTopic, c.Kafka.OutputTopic)
	}
	if c.DB.Port != 5432 || c.DB.Name != "stacklens" || c.DB.User != "stacklens_user" {
		t.Errorf("db %+v", c.DB)
	}
	if c.NATS.Shards != 16 || c.NATS.EventsMaxAge != 168*time.Hour {
		t.Errorf("nats %+v", c.NATS)
	}
	if c.Processor.FlushInterval != 250*time.Millisecond || c.Processor.AllowedLateness != 30*time.Second || c.Processor.MaxServices != 10000 {
		t.Errorf("processor %+v", c.Processor)
	}
	if c.API.Port != 8005 || c.Telemetry.MetricsPort != 8004 || !c.Telemetry.EnableMetrics {
		t.Errorf("ports api=%d metrics=%d", c.API.Port, c.Telemetry.MetricsPort)
	}
	ws, err := c.Pipeline.ValidWindows()
	if err != nil || len(ws) != 3 || ws[0].Name != "1min" || ws[2].Name != "1hour" {
		t.Errorf("windows %v %v", ws, err)
	}
	for _, v := range Vars() {
		if l.Sources[v.Env] != SourceDefault {
			t.Errorf("%s source %s, want default", v.Env, l.Sources[v.Env])
		}
	}
}

func TestSeedEnvFileIsAccepted(t *testing.T) {
	// The seed's .env.prod verbatim (testdata/seed.env.prod; the seed's
	// shell expands ${DB_PASSWORD}, here the loader does).
	seed, err := os.ReadFile("testdata/seed.env.prod")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), ".env.prod")
	if err := os.WriteFile(f, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Load("test", nil, Options{LookupEnv: envOf(map[string]string{"DB_PASSWORD": "s3cret"}), EnvFile: f})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if c.Kafka.BootstrapServers[0] != "kafka:9092" || c.Kafka.BatchSize != 100 || c.Kafka.BatchTimeoutMS != 10000 {
		t.Errorf("kafka %+v", c.Kafka)
	}
	if c.DB.Host != "postgres" || c.DB.PoolMin != 5 || c.DB.PoolMax != 20 {
		t.Errorf("db %+v", c.DB)
	}
	if c.DB.Password != "s3cret" || l.Sources["DB_PASSWORD"] != SourceEnv {
		t.Errorf("DB_PASSWORD from %s", l.Sources["DB_PASSWORD"])
	}
	if c.Telemetry.LogFormat != "json" || c.Runtime.MaxThreads != 8 || l.Sources["DB_HOST"] != SourceEnvFile {
		t.Errorf("telemetry %+v runtime %+v", c.Telemetry, c.Runtime)
	}
}

func TestPrecedenceFlagOverEnvOverFileOverEnvFile(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, ".env")
	secret := filepath.Join(dir, "pw")
	_ = os.WriteFile(envFile, []byte("DB_HOST=from-file\nDB_NAME=from-file\nDB_USER=from-file\nSMTP_PASSWORD=from-file\n"), 0o600)
	_ = os.WriteFile(secret, []byte("from-secret-file\n"), 0o600)
	env := map[string]string{"DB_HOST": "from-env", "DB_NAME": "from-env", "DB_PASSWORD_FILE": secret, "ENV_FILE": envFile}
	l, err := Load("test", []string{"--db-host", "from-flag"}, Options{LookupEnv: envOf(env)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env, want string
		src       Source
	}{
		{"DB_HOST", "from-flag", SourceFlag},
		{"DB_NAME", "from-env", SourceEnv},
		{"DB_PASSWORD", "from-secret-file", SourceFile},
		{"DB_USER", "from-file", SourceEnvFile},
		{"SMTP_PASSWORD", "from-file", SourceEnvFile},
		{"DB_PORT", "5432", SourceDefault},
	} {
		if got := l.Value(tc.env, false); got != tc.want || l.Sources[tc.env] != tc.src {
			t.Errorf("%s = %q from %s, want %q from %s", tc.env, got, l.Sources[tc.env], tc.want, tc.src)
		}
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string // the variable named in the error
	}{
		{map[string]string{"DB_PORT": "abc"}, nil, "DB_PORT"},
		{map[string]string{"DB_PORT": "70000"}, nil, "DB_PORT"},
		{map[string]string{"DB_PORT": "0"}, nil, "DB_PORT"},
		{map[string]string{"KAFKA_BATCH_SIZE": "1000"}, nil, "KAFKA_BATCH_SIZE"},
		{map[string]string{"ENABLE_METRICS": "maybe"}, nil, "ENABLE_METRICS"},
		{map[string]string{"FLUSH_INTERVAL": "fast"}, nil, "FLUSH_INTERVAL"},
		{map[string]string{"FLUSH_INTERVAL": "1ms"}, nil, "FLUSH_INTERVAL"},
		{map[string]string{"FLUSH_INTERVAL": "2h"}, nil, "FLUSH_INTERVAL"},
		{map[string]string{"FLUSH_INTERVAL": ""}, nil, "FLUSH_INTERVAL"},
		{map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{map[string]string{"AGGREGATION_WINDOWS": "1min,7sec"}, nil, "AGGREGATION_WINDOWS"},
		{map[string]string{"EVENT_TIMEZONE": "Mars/Olympus_Mons"}, nil, "EVENT_TIMEZONE"},
		{map[string]string{"EVENT_TIMEZONE": "+09:00"}, nil, "EVENT_TIMEZONE"},
		{map[string]string{"EVENT_TIMEZONE": "../../etc/passwd"}, nil, "EVENT_TIMEZONE"},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "kafka"}, nil, "KAFKA_BOOTSTRAP_SERVERS"},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": ","}, nil, "KAFKA_BOOTSTRAP_SERVERS"},
		{map[string]string{"KAFKA_INPUT_TOPIC": ""}, nil, "KAFKA_INPUT_TOPIC"},
		{map[string]string{"KAFKA_OUTPUT_TOPIC": " "}, nil, "KAFKA_OUTPUT_TOPIC"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN"}, nil, "KAFKA_SASL_USERNAME"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI"}, nil, "KAFKA_SASL_MECHANISM"},
		{map[string]string{"KAFKA_TLS_CERT_FILE": "c.pem"}, nil, "KAFKA_TLS_KEY_FILE"},
		{map[string]string{"NATS_TLS_CERT_FILE": "c.pem"}, nil, "NATS_TLS_KEY_FILE"},
		{map[string]string{"DB_POOL_MIN": "30", "DB_POOL_MAX": "20"}, nil, "DB_POOL_MIN"},
		{map[string]string{"KAFKA_SESSION_TIMEOUT": "6s", "KAFKA_HEARTBEAT_INTERVAL": "3s"}, nil, "KAFKA_HEARTBEAT_INTERVAL"},
		{map[string]string{"DATABASE_URL": "mysql://x"}, nil, "DATABASE_URL"},
		{map[string]string{"NATS_URL": "::bad"}, nil, "NATS_URL"},
		{map[string]string{"NATS_SYNC_INTERVAL": "sometimes"}, nil, "NATS_SYNC_INTERVAL"},
		{map[string]string{"NATS_SYNC_INTERVAL": "0s"}, nil, "NATS_SYNC_INTERVAL"},
		{map[string]string{"API_ADMIN_KEYS": "short"}, nil, "API_ADMIN_KEYS"},
		{map[string]string{"API_READER_KEYS": "short"}, nil, "API_READER_KEYS"},
		{map[string]string{"API_USERS": "bob:pw"}, nil, "API_USERS"},
		{map[string]string{"API_USERS": "bob:pw:root"}, nil, "API_USERS"},
		{map[string]string{"RETENTION_WARM": "0"}, nil, "RETENTION_WARM"},
		{map[string]string{"RETENTION_HOT": "10", "RETENTION_WARM": "7"}, nil, "RETENTION_WARM"},
		{map[string]string{"RETENTION_COLD": "3"}, nil, "RETENTION_COLD"},
		{map[string]string{"EVENTS_MAX_AGE": "1h", "ALLOWED_LATENESS": "2h"}, nil, "EVENTS_MAX_AGE"},
		{map[string]string{"EVENTS_MAX_BYTES": "10GB"}, nil, "EVENTS_MAX_BYTES"},
		{map[string]string{"EVENTS_MAX_BYTES": "-1"}, nil, "EVENTS_MAX_BYTES"},
		{map[string]string{"EVENTS_MAX_BYTES": "1000"}, nil, "EVENTS_MAX_BYTES"},
		{map[string]string{"DLQ_MAX_BYTES": "1000"}, nil, "DLQ_MAX_BYTES"},
		{map[string]string{"DB_MAX_BYTES": "1000"}, nil, "DB_MAX_BYTES"},
		{map[string]string{"DB_MAX_BYTES": "50GB"}, nil, "DB_MAX_BYTES"},
		{map[string]string{"DB_MAX_BYTES": "-1"}, nil, "DB_MAX_BYTES"},
		{map[string]string{"NATS_COMPRESSION": "gzip"}, nil, "NATS_COMPRESSION"},
		{map[string]string{"SLACK_WEBHOOK_URL": "ftp://x"}, nil, "SLACK_WEBHOOK_URL"},
		{map[string]string{"PAGERDUTY_URL": "nope"}, nil, "PAGERDUTY_URL"},
		{map[string]string{"SMTP_HOST": "mail"}, nil, "SMTP_TO"},
		{map[string]string{"METRICS_PORT": "8005"}, nil, "METRICS_PORT"},
		{map[string]string{"METRICS_PORT": "9000", "API_PORT": "9000", "METRICS_HOST": "0.0.0.0"}, nil, "METRICS_PORT"},
		{map[string]string{"METRICS_PORT": "9000", "API_PORT": "9000", "API_HOST": "::"}, nil, "METRICS_PORT"},
		{map[string]string{"METRICS_PORT": "9000", "API_PORT": "9000", "API_HOST": "localhost"}, nil, "METRICS_PORT"},
		{map[string]string{"DB_PASSWORD_FILE": "/nonexistent/pw"}, nil, "DB_PASSWORD_FILE"},
		{nil, []string{"--db-port", "x"}, "DB_PORT"},
		{nil, []string{"--no-such-flag"}, "flags"},
		{map[string]string{"ENV_FILE": "/nonexistent/.env"}, nil, "ENV_FILE"},
	} {
		_, err := load(t, tc.env, tc.args...)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%v %v: err = %v, want *config.Error", tc.env, tc.args, err)
			continue
		}
		if ce.Var != tc.want {
			t.Errorf("%v %v: names %s, want %s (%v)", tc.env, tc.args, ce.Var, tc.want, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "config: "+tc.want+": ") {
			t.Errorf("message %q is not one line naming %s", msg, tc.want)
		}
	}
}

func TestEventTimezone(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"", "UTC"}, // unset in .env: the default
		{"UTC", "UTC"},
		{"Local", "Local"},
		{"Asia/Tokyo", "Asia/Tokyo"},
		{"America/Los_Angeles", "America/Los_Angeles"},
	} {
		l, err := load(t, map[string]string{"EVENT_TIMEZONE": tc.value})
		if err != nil {
			t.Fatalf("EVENT_TIMEZONE=%q: %v", tc.value, err)
		}
		loc, err := l.Pipeline.EventLocation()
		if err != nil || loc.String() != tc.want {
			t.Errorf("EVENT_TIMEZONE=%q: location %v %v, want %s", tc.value, loc, err, tc.want)
		}
	}
	l, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if loc, _ := l.Pipeline.EventLocation(); loc != time.UTC {
		t.Errorf("default location %v, want UTC", loc)
	}
}

func TestSecretsNeverEchoed(t *testing.T) {
	_, err := load(t, map[string]string{"API_ADMIN_KEYS": "tiny-secret"})
	if err == nil || strings.Contains(err.Error(), "tiny-secret") {
		t.Fatalf("error %v echoes the secret", err)
	}
	l := mustLoad(t, map[string]string{"DB_PASSWORD": "hunter2hunter2", "API_READER_KEYS": "0123456789abcdef0123"})
	var out bytes.Buffer
	l.Print(&out)
	s := out.String()
	if strings.Contains(s, "hunter2") || strings.Contains(s, "0123456789abcdef") {
		t.Fatalf("Print leaks a secret:\n%s", s)
	}
	for _, want := range []string{"DB_PASSWORD=****  # env", "DB_PORT=5432\n", "FLUSH_INTERVAL=250ms", "AGGREGATION_WINDOWS=1min,5min,1hour", "# Kafka", "ENABLE_METRICS=true"} {
		if !strings.Contains(s, want) {
			t.Errorf("Print output lacks %q", want)
		}
	}
	if got := l.Value("DB_PASSWORD", false); got != "hunter2hunter2" {
		t.Errorf("unmasked value %q", got)
	}
	if got := l.Value("NOPE", false); got != "" {
		t.Errorf("unknown var value %q", got)
	}
}

func TestNormalisation(t *testing.T) {
	l := mustLoad(t, map[string]string{
		"LOG_LEVEL": "warning", "LOG_FORMAT": "JSON", "ENABLE_METRICS": "off",
		"KAFKA_BOOTSTRAP_SERVERS": " a:1 , b:2 ,", "API_USERS": "ann:pw:admin,bob:pw2:reader",
		"API_ADMIN_KEYS": "0123456789abcdef", "API_READER_KEYS": "fedcba9876543210",
	})
	c := l.Config
	if c.Telemetry.LogLevel != "WARNING" || c.Telemetry.LogFormat != "json" || c.Telemetry.EnableMetrics {
		t.Errorf("telemetry %+v", c.Telemetry)
	}
	if got := strings.Join(c.Kafka.BootstrapServers, "|"); got != "a:1|b:2" {
		t.Errorf("brokers %q", got)
	}
	cr, err := c.API.Credentials()
	if err != nil || cr.Empty() {
		t.Fatal(err)
	}
	if cr.Keys["0123456789abcdef"] != RoleAdmin || cr.Keys["fedcba9876543210"] != RoleReader {
		t.Errorf("keys %v", cr.Keys)
	}
	if cr.Users["ann"].Role != RoleAdmin || cr.Users["bob"].Password != "pw2" || cr.Users["bob"].Role.String() != "reader" {
		t.Errorf("users %v", cr.Users)
	}
	if Role(0).String() != "none" || RoleAdmin.String() != "admin" {
		t.Error("role names")
	}
	empty, _ := API{}.Credentials()
	if !empty.Empty() {
		t.Error("no credentials should be Empty")
	}
}

func TestDSN(t *testing.T) {
	d := DB{Host: "db.internal", Port: 5433, Name: "stack lens", User: "u", Password: "p@ss/word", SSLMode: "require", ReaderUser: "stacklens_reader"}
	if got, want := d.DSN(), "postgres://u:p%40ss%2Fword@db.internal:5433/stack%20lens?sslmode=require"; got != want {
		t.Errorf("DSN %s, want %s", got, want)
	}
	if d.ReaderDSN() != "" {
		t.Error("ReaderDSN without a reader password should be empty")
	}
	d.ReaderPassword = "r"
	if got, want := d.ReaderDSN(), "postgres://stacklens_reader:r@db.internal:5433/stack%20lens?sslmode=require"; got != want {
		t.Errorf("ReaderDSN %s, want %s", got, want)
	}
	d.Password = ""
	if got := d.DSN(); !strings.HasPrefix(got, "postgres://u@db.internal") {
		t.Errorf("DSN without password %s", got)
	}
	d.URL = "postgres://x@y/z"
	if d.DSN() != d.URL {
		t.Error("DATABASE_URL should win")
	}
}

func TestHelpAndReference(t *testing.T) {
	var out bytes.Buffer
	called := false
	_, err := Load("test", []string{"-h"}, Options{LookupEnv: envOf(nil), Output: &out, Usage: func(fs *flag.FlagSet) { called = true; fs.PrintDefaults() }})
	if !errors.Is(err, ErrHelp) || !called {
		t.Fatalf("err %v called %v", err, called)
	}
	if !strings.Contains(out.String(), "-db-port") {
		t.Errorf("usage lacks -db-port:\n%s", out.String())
	}
	var ref bytes.Buffer
	WriteReference(&ref)
	for _, v := range Vars() {
		if !strings.Contains(ref.String(), "`"+v.Env+"`") {
			t.Errorf("reference lacks %s", v.Env)
		}
	}
	if !strings.Contains(ref.String(), "`DB_PASSWORD_FILE`") {
		t.Error("reference does not mention NAME_FILE for secrets")
	}
}

// TestReferenceDocIsCurrent keeps docs/CONFIGURATION.md in step with the
// variables; regenerate it with `go run ./cmd/stacklens config vars`.
func TestReferenceDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONFIGURATION.md")
	if err != nil {
		t.Fatal(err)
	}
	var ref bytes.Buffer
	WriteReference(&ref)
	if !bytes.Contains(doc, ref.Bytes()) {
		t.Fatal("docs/CONFIGURATION.md is out of date: regenerate the table with `go run ./cmd/stacklens config vars`")
	}
}

func TestValidateOnHandBuiltConfig(t *testing.T) {
	c := mustLoad(t, nil).Config
	c.Pipeline.Windows = "bogus"
	var ce *Error
	if err := c.Validate(); !errors.As(err, &ce) || ce.Var != "AGGREGATION_WINDOWS" {
		t.Fatalf("err %v", err)
	}
}

// TestMetricsAndAPIPortsMayShareOnlyWithoutOverlap: the same port is fine on
// distinct addresses, with metrics off, or when both pick a free port.
func TestMetricsAndAPIPortsMayShareOnlyWithoutOverlap(t *testing.T) {
	for _, env := range []map[string]string{
		{"METRICS_PORT": "9000", "API_PORT": "9000", "METRICS_HOST": "127.0.0.1", "API_HOST": "10.1.2.3"},
		{"METRICS_PORT": "9000", "API_PORT": "9000", "METRICS_HOST": "::1", "API_HOST": "127.0.0.1"},
		{"METRICS_PORT": "8005", "ENABLE_METRICS": "false"},
		{"METRICS_PORT": "0", "API_PORT": "0"},
	} {
		if _, err := load(t, env); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
}

// TestWindowsParsedOnceAndTiered: Validate fills WindowList (every
// component reads the windows from there), windows under 5min keep
// RETENTION_WARM days and the others RETENTION_COLD, and a window that
// would be archived while open is refused naming AGGREGATION_WINDOWS.
func TestWindowsParsedOnceAndTiered(t *testing.T) {
	c := mustLoad(t, map[string]string{"AGGREGATION_WINDOWS": "1day,2min,15min", "RETENTION_WARM": "3", "RETENTION_COLD": "9"}).Config
	if got := fmt.Sprint(c.Pipeline.WindowList); got != "[2min 15min 1day]" {
		t.Fatalf("WindowList %s", got)
	}
	for _, w := range c.Pipeline.WindowList {
		tier, days := c.Retention.WindowTier(w), c.Retention.WindowDays(w)
		if want := map[string]string{"2min": "warm 3", "15min": "cold 9", "1day": "cold 9"}[w.Name]; fmt.Sprint(tier, " ", days) != want {
			t.Errorf("%s: %s %d, want %s", w.Name, tier, days, want)
		}
	}
	c.Pipeline.Windows = "1min,9day"
	var ce *Error
	if err := c.Validate(); !errors.As(err, &ce) || ce.Var != "AGGREGATION_WINDOWS" || !strings.Contains(ce.Msg, "RETENTION_COLD=9") {
		t.Errorf("9day window with RETENTION_COLD=9: %v", err)
	}
	if _, err := (Pipeline{Windows: "1min"}).ValidWindows(); !errors.Is(err, ErrNotValidated) {
		t.Errorf("unvalidated pipeline: %v, want ErrNotValidated", err)
	}
}

// TestNATSSync: NATS_SYNC_INTERVAL is an fsync interval or always; the
// default keeps the server's own (2m).
func TestNATSSync(t *testing.T) {
	for raw, want := range map[string]struct {
		d      time.Duration
		always bool
	}{"2m": {2 * time.Minute, false}, "10s": {10 * time.Second, false}, "always": {0, true}, " Always ": {0, true}} {
		d, always, err := Runtime{NATSSyncInterval: raw}.NATSSync()
		if err != nil || d != want.d || always != want.always {
			t.Errorf("%q: %v %v %v", raw, d, always, err)
		}
	}
	var r Runtime
	for _, v := range Vars() {
		if v.Env == "NATS_SYNC_INTERVAL" {
			r.NATSSyncInterval = v.Default
		}
	}
	if d, always, err := r.NATSSync(); err != nil || d != 2*time.Minute || always {
		t.Errorf("default: %v %v %v", d, always, err)
	}
}
