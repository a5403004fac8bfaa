// Package config loads, defaults and validates the configuration shared by
// every StackLens role.
//
// Every setting is an environment variable with the seed checklist's name
// (KAFKA_BOOTSTRAP_SERVERS, DB_HOST, …) plus StackLens's own (NATS_URL,
// SHARDS, …). Values come, weakest first, from the struct tag default, a
// .env file, the process environment and finally a command-line flag named
// after the variable (--db-port for DB_PORT). In the environment and in
// the .env file alike, NAME_FILE (the file's contents, for secrets) is
// read when NAME itself is not set there. A bad value fails with one line naming the
// variable; see [Error].
package config

import (
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// Config is the whole configuration. Sections group the variables by the
// component that reads them; every role loads all of it so one .env file
// serves every role.
type Config struct {
	Kafka     Kafka
	DB        DB
	NATS      NATS
	Pipeline  Pipeline
	Processor Processor
	Retention Retention
	API       API
	Alerting  Alerting
	Telemetry Telemetry
	Runtime   Runtime
}

// Kafka configures the Kafka connection and topics.
type Kafka struct {
	BootstrapServers []string      `env:"KAFKA_BOOTSTRAP_SERVERS" default:"127.0.0.1:9092" desc:"Kafka brokers, comma-separated (stacklens dev embeds one when unset)"`
	InputTopic       string        `env:"KAFKA_INPUT_TOPIC" default:"stacklens-analytics" desc:"topic the bridge consumes"`
	OutputTopic      string        `env:"KAFKA_OUTPUT_TOPIC" default:"analytics-alerts" desc:"topic alert state changes are written to"`
	GroupID          string        `env:"KAFKA_GROUP_ID" default:"stacklens-bridge" desc:"consumer group of the bridges"`
	BatchSize        int           `env:"KAFKA_BATCH_SIZE" default:"500" min:"1" max:"999" desc:"most events per atomic JetStream batch (plus one checkpoint message)"`
	BatchTimeoutMS   int           `env:"KAFKA_BATCH_TIMEOUT_MS" default:"20" min:"1" max:"60000" desc:"longest a batch may keep filling while messages keep arriving"`
	Linger           time.Duration `env:"KAFKA_LINGER" default:"5ms" min:"1ms" max:"1m" desc:"once a partition is caught up, how long a partial batch waits for one more message before it is published (KAFKA_BATCH_TIMEOUT_MS bounds the whole batch)"`
	SessionTimeout   time.Duration `env:"KAFKA_SESSION_TIMEOUT" default:"10s" min:"1s" max:"30m" desc:"consumer-group session timeout: how long a bridge that died without leaving keeps its partitions"`
	Heartbeat        time.Duration `env:"KAFKA_HEARTBEAT_INTERVAL" default:"1s" min:"100ms" max:"10m" desc:"consumer-group heartbeat interval (below KAFKA_SESSION_TIMEOUT / 3)"`
	RebalanceTimeout time.Duration `env:"KAFKA_REBALANCE_TIMEOUT" default:"10s" min:"1s" max:"30m" desc:"how long a rebalance waits for every member to rejoin"`
	Partitions       int           `env:"KAFKA_PARTITIONS" default:"12" min:"1" max:"10000" desc:"partitions of topics StackLens creates (dev and tests)"`
	SASLMechanism    string        `env:"KAFKA_SASL_MECHANISM" default:"" oneof:",PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" desc:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)"`
	SASLUsername     string        `env:"KAFKA_SASL_USERNAME" desc:"SASL user"`
	SASLPassword     string        `env:"KAFKA_SASL_PASSWORD" secret:"true" desc:"SASL password"`
	TLS              bool          `env:"KAFKA_TLS" default:"false" desc:"connect to Kafka over TLS"`
	TLSCAFile        string        `env:"KAFKA_TLS_CA_FILE" desc:"PEM CA bundle for Kafka TLS"`
	TLSCertFile      string        `env:"KAFKA_TLS_CERT_FILE" desc:"client certificate for Kafka mTLS"`
	TLSKeyFile       string        `env:"KAFKA_TLS_KEY_FILE" desc:"client key for Kafka mTLS"`
	TLSSkipVerify    bool          `env:"KAFKA_TLS_INSECURE_SKIP_VERIFY" default:"false" desc:"skip Kafka certificate verification (testing only)"`
}

// DB configures PostgreSQL.
type DB struct {
	Host           string `env:"DB_HOST" default:"127.0.0.1" desc:"PostgreSQL host"`
	Port           int    `env:"DB_PORT" default:"5432" min:"1" max:"65535" desc:"PostgreSQL port"`
	Name           string `env:"DB_NAME" default:"stacklens" desc:"database name"`
	User           string `env:"DB_USER" default:"stacklens_user" desc:"user for migrations and projections"`
	Password       string `env:"DB_PASSWORD" secret:"true" desc:"password of DB_USER"`
	SSLMode        string `env:"DB_SSLMODE" default:"prefer" oneof:"disable,allow,prefer,require,verify-ca,verify-full" desc:"libpq sslmode"`
	PoolMin        int    `env:"DB_POOL_MIN" default:"2" min:"0" max:"1000" desc:"connections the projections keep open (the API and its alert engine size their own pools)"`
	PoolMax        int    `env:"DB_POOL_MAX" default:"10" min:"1" max:"1000" desc:"most connections per pool"`
	ReaderUser     string `env:"DB_READER_USER" default:"stacklens_reader" desc:"read-only role the API queries as"`
	ReaderPassword string `env:"DB_READER_PASSWORD" secret:"true" desc:"password of DB_READER_USER (empty: SET ROLE on the main pool)"`
	WriterPassword string `env:"DB_WRITER_PASSWORD" secret:"true" desc:"stacklens migrate gives the stacklens_writer role LOGIN and this password (empty: leave the role as it is)"`
	AdminPassword  string `env:"DB_ADMIN_PASSWORD" secret:"true" desc:"stacklens migrate gives the stacklens_admin role LOGIN and this password (empty: leave the role as it is)"`
	URL            string `env:"DATABASE_URL" secret:"true" desc:"full DSN; overrides DB_HOST…DB_SSLMODE when set"`
	// MaxBytes is a budget, not a bound PostgreSQL enforces: retention
	// goes by age (docs/RUNBOOK.md, "Database near its byte bound").
	MaxBytes  int    `env:"DB_MAX_BYTES" default:"0" min:"0" desc:"size budget of the StackLens database in bytes, e.g. 80 % of its disk (0: none); /health and stacklens_database_bytes_used_ratio warn from 80 % of it; nothing is deleted at it"`
	Timescale string `env:"DB_TIMESCALE" default:"auto" oneof:"auto,on,off" desc:"use TimescaleDB hypertables: auto (when the extension is available), on, off"`
}

// NATS configures the NATS connection and JetStream layout.
type NATS struct {
	URL          string        `env:"NATS_URL" default:"nats://127.0.0.1:4222" desc:"NATS server URLs, comma-separated"`
	User         string        `env:"NATS_USER" desc:"NATS user"`
	Password     string        `env:"NATS_PASSWORD" secret:"true" desc:"NATS password"`
	Token        string        `env:"NATS_TOKEN" secret:"true" desc:"NATS token"`
	NKeySeedFile string        `env:"NATS_NKEY_SEED_FILE" desc:"file holding an nkey seed"`
	CredsFile    string        `env:"NATS_CREDS_FILE" desc:"NATS .creds file (JWT + nkey)"`
	TLSCAFile    string        `env:"NATS_TLS_CA_FILE" desc:"PEM CA bundle for NATS TLS"`
	TLSCertFile  string        `env:"NATS_TLS_CERT_FILE" desc:"client certificate for NATS mTLS"`
	TLSKeyFile   string        `env:"NATS_TLS_KEY_FILE" desc:"client key for NATS mTLS"`
	Replicas     int           `env:"NATS_REPLICAS" default:"1" min:"1" max:"5" desc:"replicas of streams and KV buckets (3 in a cluster)"`
	Shards       int           `env:"SHARDS" default:"16" min:"1" max:"1024" desc:"event shards (fixed when the stream is created)"`
	EventsMaxAge time.Duration `env:"EVENTS_MAX_AGE" default:"168h" min:"1h" desc:"retention of the event stream = the replay horizon"`
	DLQMaxAge    time.Duration `env:"DLQ_MAX_AGE" default:"720h" min:"1h" desc:"retention of dead letters: max age of the stream STACKLENS_DLQ, which copies them from the event stream"`
	// Streams bounded by bytes drop their oldest messages at the bound
	// (docs/RUNBOOK.md, "Stream near its byte bound").
	EventsMaxBytes int    `env:"EVENTS_MAX_BYTES" default:"0" min:"0" desc:"byte bound of the event stream STACKLENS_EVENTS (0: none, only EVENTS_MAX_AGE); at the bound the oldest events are dropped, even unconsumed ones; /health and stacklens_stream_bytes_used_ratio warn from 80 %"`
	DLQMaxBytes    int    `env:"DLQ_MAX_BYTES" default:"0" min:"0" desc:"byte bound of the dead-letter stream STACKLENS_DLQ (0: none, only DLQ_MAX_AGE); at the bound the oldest dead letters are dropped"`
	Compression    string `env:"NATS_COMPRESSION" default:"s2" oneof:"s2,none" desc:"compression of the file streams STACKLENS_EVENTS and STACKLENS_DLQ: s2 or none; a change applies to data written after it"`
}

// Pipeline holds the event contract shared by the bridge and processors.
type Pipeline struct {
	Windows       string        `env:"AGGREGATION_WINDOWS" default:"1min,5min,1hour" desc:"tumbling windows: whole minutes, hours or days, each (plus ALLOWED_LATENESS) shorter than its retention; each gets a KV bucket and a table"`
	MaxEventBytes int           `env:"MAX_EVENT_BYTES" default:"65536" min:"64" max:"1048576" desc:"larger messages are dead-lettered too_large"`
	MaxFutureSkew time.Duration `env:"MAX_FUTURE_SKEW" default:"5m" min:"0s" desc:"events further in the future are dead-lettered"`
	EventTimezone string        `env:"EVENT_TIMEZONE" default:"UTC" desc:"zone of event timestamps written without an offset (Python's datetime.now().isoformat()): UTC, Local or an IANA name such as Asia/Tokyo; every role must use the same"`

	// WindowList is Windows parsed, smallest first, filled by Validate:
	// every component reads the windows from here, so they are parsed once
	// and judged once. Empty on a Config that was not validated.
	WindowList []window.Window
}

// Processor configures the aggregation workers.
type Processor struct {
	ID              string        `env:"PROCESSOR_ID" desc:"worker identity in leases (default host-pid)"`
	FlushInterval   time.Duration `env:"FLUSH_INTERVAL" default:"250ms" min:"10ms" max:"1m" desc:"how often folded deltas are written to KV"`
	AllowedLateness time.Duration `env:"ALLOWED_LATENESS" default:"30s" min:"0s" desc:"how long after its end a window stays open"`
	MaxServices     int           `env:"MAX_SERVICES" default:"10000" min:"1" desc:"distinct services per window bucket before _overflow"`
	LeaseTTL        time.Duration `env:"LEASE_TTL" default:"10s" min:"1s" max:"10m" desc:"shard lease lifetime; a silent owner loses its shards after it"`
}

// Retention maps the seed's three tiers, in days, onto the stored data.
type Retention struct {
	HotDays  int `env:"RETENTION_HOT" default:"1" min:"1" desc:"days of raw events (analytics_events)"`
	WarmDays int `env:"RETENTION_WARM" default:"7" min:"1" desc:"days of the metrics of windows under 5min (1min)"`
	ColdDays int `env:"RETENTION_COLD" default:"30" min:"1" desc:"days of the metrics of windows of 5min and longer (5min, 1hour, …) and of resolved alerts"`
	// RawEvents "stream" keeps raw events only in the event stream: past
	// one PostgreSQL primary's row rate the aggregates still scale out
	// (docs/SCALING.md).
	RawEvents string `env:"RAW_EVENTS" default:"postgres" oneof:"postgres,stream" desc:"where raw events are kept: postgres (analytics_events for RETENTION_HOT days, and the event stream) or stream (only the event stream, for EVENTS_MAX_AGE: no raw-event rows, PostgreSQL holds aggregates and alerts)"`
}

// WarmWindowLimit divides the windows between the retention tiers:
// windows shorter than it keep RETENTION_WARM days (their rows are many),
// the others RETENTION_COLD days. It holds for the KV buckets and the
// PostgreSQL tables alike (docs/SCHEMA.md).
const WarmWindowLimit = 5 * time.Minute

// WindowTier is "warm" or "cold", the retention tier of w's aggregates.
func (r Retention) WindowTier(w window.Window) string {
	if w.Size < WarmWindowLimit {
		return "warm"
	}
	return "cold"
}

// WindowDays is how many days w's aggregates are kept.
func (r Retention) WindowDays(w window.Window) int {
	if r.WindowTier(w) == "warm" {
		return r.WarmDays
	}
	return r.ColdDays
}

// API configures the dashboard API.
type API struct {
	Host         string        `env:"API_HOST" default:"127.0.0.1" desc:"listen address of the API"`
	Port         int           `env:"API_PORT" default:"8005" min:"0" max:"65535" desc:"listen port of the API"`
	ReaderKeys   []string      `env:"API_READER_KEYS" secret:"true" desc:"bearer keys with the reader role, comma-separated"`
	AdminKeys    []string      `env:"API_ADMIN_KEYS" secret:"true" desc:"bearer keys with the admin role, comma-separated"`
	Users        []string      `env:"API_USERS" secret:"true" desc:"basic-auth users as user:password:role, comma-separated"`
	RateLimit    int           `env:"API_RATE_LIMIT" default:"200" min:"0" desc:"requests per second per client (0: unlimited)"`
	CORSOrigins  []string      `env:"API_CORS_ORIGINS" desc:"origins allowed by CORS, comma-separated"`
	MaxBodyBytes int           `env:"API_MAX_BODY_BYTES" default:"65536" min:"1024" desc:"largest accepted request body"`
	QueryTimeout time.Duration `env:"API_QUERY_TIMEOUT" default:"2s" min:"10ms" desc:"statement timeout of dashboard queries"`
	SLOCacheTTL  time.Duration `env:"API_SLO_CACHE_TTL" default:"1s" min:"0s" max:"1m" desc:"how long a computed GET /slos or /slos/{id} answer is reused for the same request (0: only concurrent requests share one); SLO writes on this replica drop it at once"`
	CacheMaxAge  time.Duration `env:"API_CACHE_MAX_AGE" default:"10s" min:"0s" max:"1h" desc:"GET /metrics, /health-status and /alerts answers are reused until the tables they read change (PostgreSQL notifies the API at each commit) and for at most this long (0: only concurrent requests share one)"`
	SLOFile      string        `env:"SLO_FILE" desc:"JSON file with an array of SLO definitions (the POST /slos body), upserted by name when the api role starts"`
}

// Alerting configures notification channels; endpoints come only from here.
type Alerting struct {
	EvalInterval    time.Duration `env:"ALERT_EVAL_INTERVAL" default:"500ms" min:"100ms" desc:"how often rules are checked against newly final windows"`
	SlackWebhookURL string        `env:"SLACK_WEBHOOK_URL" secret:"true" desc:"Slack incoming webhook"`
	SMTPHost        string        `env:"SMTP_HOST" desc:"SMTP server for alert email"`
	SMTPPort        int           `env:"SMTP_PORT" default:"587" min:"1" max:"65535" desc:"SMTP port"`
	SMTPUser        string        `env:"SMTP_USER" desc:"SMTP user"`
	SMTPPassword    string        `env:"SMTP_PASSWORD" secret:"true" desc:"SMTP password"`
	SMTPFrom        string        `env:"SMTP_FROM" default:"stacklens@localhost" desc:"From address of alert email"`
	SMTPTo          []string      `env:"SMTP_TO" desc:"alert email recipients, comma-separated"`
	SMTPTLS         string        `env:"SMTP_TLS" default:"starttls" oneof:"starttls,tls,none" desc:"SMTP transport security"`
	PagerDutyKey    string        `env:"PAGERDUTY_SERVICE_KEY" secret:"true" desc:"PagerDuty Events API v2 routing key"`
	PagerDutyURL    string        `env:"PAGERDUTY_URL" default:"https://events.pagerduty.com/v2/enqueue" desc:"PagerDuty Events API v2 endpoint"`
	DeliveryTimeout time.Duration `env:"ALERT_DELIVERY_TIMEOUT" default:"10s" min:"100ms" desc:"timeout of one delivery attempt"`
}

// Telemetry configures logs and Prometheus metrics.
type Telemetry struct {
	LogLevel      string `env:"LOG_LEVEL" default:"INFO" oneof:"DEBUG,INFO,WARN,WARNING,ERROR" fold:"true" desc:"DEBUG, INFO, WARN or ERROR"`
	LogFormat     string `env:"LOG_FORMAT" default:"text" oneof:"text,json" fold:"true" desc:"json lines, or text (coloured on a terminal)"`
	EnableMetrics bool   `env:"ENABLE_METRICS" default:"true" desc:"serve Prometheus metrics, /health and /ready (what stacklens healthcheck probes; without it only the api can be probed)"`
	MetricsHost   string `env:"METRICS_HOST" default:"127.0.0.1" desc:"listen address of the metrics server"`
	MetricsPort   int    `env:"METRICS_PORT" default:"8004" min:"0" max:"65535" desc:"listen port of the metrics server (0: any free port); must differ from API_PORT on an overlapping address"`
	StatsInterval int    `env:"STATS_INTERVAL_SEC" default:"30" min:"0" desc:"seconds between each role's progress log line: in/out, dead letters, lag, rates (0: off)"`
}

// Runtime holds process-wide settings.
type Runtime struct {
	MaxThreads int    `env:"MAX_THREADS" default:"0" min:"0" max:"4096" desc:"GOMAXPROCS (0: Go's default: every core, or the container's CPU limit)"`
	DataDir    string `env:"DATA_DIR" default:".data" desc:"where stacklens dev keeps embedded servers' state"`
	// NATSSyncInterval only reaches the embedded server; a standalone
	// nats-server takes sync_interval from its own config file.
	NATSSyncInterval string `env:"NATS_SYNC_INTERVAL" default:"2m" desc:"fsync policy of the NATS server stacklens dev embeds: a duration (acknowledged writes of the last interval can be lost on power loss) or always (fsync every write; slower), see docs/RUNBOOK.md NATS durability"`
	DeployEnv        string `env:"DEPLOYMENT_ENV" default:"development" desc:"free-form environment name shown by /health"`
}
