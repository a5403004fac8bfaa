// Package schema holds StackLens' PostgreSQL/TimescaleDB schema as versioned
// SQL migrations (migrations/NNNN_name.sql, embedded in the binary) and the
// migrator that applies them (`stacklens migrate`).
//
// The same migrations serve plain PostgreSQL (15+) and TimescaleDB: the
// TimescaleDB statements sit in PL/pgSQL that runs only when the migrator
// enables TimescaleDB (Options.Timescale) and the extension is installed.
//
// Options reach SQL only as bound parameters: each migration transaction
// starts with
//
//	SELECT set_config('stacklens.timescale', $1, true), ...
//
// (transaction-local settings read with current_setting), and the retention
// days are stored in the analytics_settings table, where
// analytics_archive_old_data() and the TimescaleDB retention policies read
// them. No SQL text is ever built from option values in Go.
//
// See docs/SCHEMA.md for the objects.
package schema

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what the migrator needs from PostgreSQL. *pgx.Conn and
// *pgxpool.Pool both satisfy it (so does pgx.Tx: each migration then runs in
// a savepoint of the caller's transaction).
//
// Every unit of work — bootstrap, each migration, the final configuration
// step — runs in its own transaction whose first statement is
// pg_advisory_xact_lock(LockKey). The lock is therefore always held by the
// connection doing the work, which makes a pool as safe as a single
// connection, and concurrent Up calls (several replicas starting at once)
// serialise: the second one finds each migration already recorded and skips it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var _ DB = (*pgx.Conn)(nil)

// LockKey is the pg_advisory_xact_lock key taken by every migrator transaction.
const LockKey int64 = 0x53544b4c4e530001 // "STKLNS" 0001

// ErrChecksumMismatch is returned by Up when an applied migration's SQL differs
// from the one in this binary. Migrations are immutable once released: add a
// new one instead of editing an old one.
var ErrChecksumMismatch = errors.New("applied migration was modified")

// ErrTimescaleUnavailable is returned by Up with Timescale "on" when the
// timescaledb extension cannot be used by this server.
var ErrTimescaleUnavailable = errors.New("timescaledb extension not available")

// Options tune Up.
type Options struct {
	// Timescale: "auto" (default, also ""): use TimescaleDB when the server
	// can (TimescaleAvailable); "on": require it; "off": plain PostgreSQL
	// tables. Turning it off later does not convert hypertables back.
	Timescale string
	// Retention in days (RETENTION_HOT/WARM/COLD): hot = analytics_events,
	// warm = analytics_metrics_1min, cold = analytics_metrics_5min and _1hour
	// and resolved alerts. 0 keeps the stored value (defaults 1, 7, 30).
	RetentionHot, RetentionWarm, RetentionCold int
	// Optional passwords: when set, stacklens_reader / stacklens_writer /
	// stacklens_admin get LOGIN and this password (stored as a SCRAM-SHA-256
	// verifier computed here, so the clear text never reaches the server).
	// Printable ASCII, or an existing "SCRAM-SHA-256$..." verifier. Empty
	// leaves the role as it is (NOLOGIN when the migrations created it).
	ReaderPassword, WriterPassword, AdminPassword string
	// Windows get a metrics table each (analytics_metrics_<Name>, created
	// like the default windows' tables when missing) and are recorded in
	// analytics_windows with their retention tier, after the migrations.
	// The default windows' tables exist regardless.
	Windows []Window
}

// Window is one aggregation window to provide a table for.
type Window struct {
	// Name is the canonical window name (window.Window.Name: "15min",
	// "1day"); anything else is refused by the database.
	Name string
	// Tier is "warm" (kept RetentionWarm days) or "cold" (RetentionCold).
	Tier string
}

// Status is one migration's state in a database.
type Status struct {
	Version   int
	Name      string
	Applied   bool
	AppliedAt time.Time
}

// maxRetentionDays matches the CHECK on analytics_settings (six digits).
const maxRetentionDays = 999999

// settings are the resolved options passed to SQL.
type settings struct {
	timescale       string // "on" or "off"
	hot, warm, cold int    // 0: keep
	reader, writer  string // passwords
	admin           string
	windows         []Window
}

func (s settings) days(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// setGUCs passes the options to the migration SQL as transaction-local settings.
func (s settings) setGUCs(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT set_config('stacklens.timescale', $1, true),
	       set_config('stacklens.retention_hot_days', $2, true),
	       set_config('stacklens.retention_warm_days', $3, true),
	       set_config('stacklens.retention_cold_days', $4, true)`,
		s.timescale, s.days(s.hot), s.days(s.warm), s.days(s.cold))
	return err
}

func resolve(ctx context.Context, db DB, o Options) (settings, error) {
	s := settings{hot: o.RetentionHot, warm: o.RetentionWarm, cold: o.RetentionCold,
		reader: o.ReaderPassword, writer: o.WriterPassword, admin: o.AdminPassword, windows: o.Windows}
	for name, d := range map[string]int{"RetentionHot": s.hot, "RetentionWarm": s.warm, "RetentionCold": s.cold} {
		if d < 0 || d > maxRetentionDays {
			return s, fmt.Errorf("schema: %s = %d days: want 0 (keep) or 1..%d", name, d, maxRetentionDays)
		}
	}
	for name, pw := range map[string]string{"ReaderPassword": s.reader, "WriterPassword": s.writer, "AdminPassword": s.admin} {
		if err := checkPassword(pw); err != nil {
			return s, fmt.Errorf("schema: %s: %w", name, err)
		}
	}
	switch strings.ToLower(strings.TrimSpace(o.Timescale)) {
	case "", "auto":
		ok, err := TimescaleAvailable(ctx, db)
		if err != nil {
			return s, err
		}
		s.timescale = onOff(ok)
	case "on":
		ok, err := TimescaleAvailable(ctx, db)
		if err != nil {
			return s, err
		}
		if !ok {
			return s, fmt.Errorf("schema: Timescale = on: %w (install it and add timescaledb to shared_preload_libraries)", ErrTimescaleUnavailable)
		}
		s.timescale = "on"
	case "off":
		s.timescale = "off"
	default:
		return s, fmt.Errorf("schema: Timescale = %q: want auto, on or off", o.Timescale)
	}
	return s, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// TimescaleAvailable reports whether TimescaleDB can be used in this
// database: the extension is installed here, or it is available to the
// server and preloaded (shared_preload_libraries), so CREATE EXTENSION works.
//
// Preloading is detected by the integer setting
// timescaledb.max_background_workers, which only TimescaleDB's loader
// defines, and only when it is in shared_preload_libraries (it is
// PGC_POSTMASTER; set in postgresql.conf without the loader it is a
// placeholder of type string). Reading shared_preload_libraries itself needs
// superuser or pg_read_all_settings, which the migration user may not have.
func TimescaleAvailable(ctx context.Context, db DB) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
	    OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
	        AND EXISTS (SELECT 1 FROM pg_settings
	                    WHERE name = 'timescaledb.max_background_workers' AND vartype = 'integer'))`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("schema: checking for timescaledb: %w", err)
	}
	return ok, nil
}

// Up applies the migrations not yet recorded in schema_migrations, each in
// its own transaction, then stores the options (retention days, TimescaleDB
// policies, role passwords) — also when there was nothing to migrate. It
// returns how many migrations it applied. It is idempotent and safe to run
// concurrently (see DB), and refuses to run (ErrChecksumMismatch) when an
// applied migration was edited. A nil log discards messages.
func Up(ctx context.Context, db DB, opts Options, log *slog.Logger) (applied int, err error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	migs, err := Migrations()
	if err != nil {
		return 0, err
	}
	s, err := resolve(ctx, db, opts)
	if err != nil {
		return 0, err
	}
	applied, err = apply(ctx, db, migs, s, log)
	if err != nil {
		return applied, err
	}
	if err := configure(ctx, db, s); err != nil {
		return applied, fmt.Errorf("schema: applying options: %w", err)
	}
	log.Info("schema up to date", "applied", applied, "version", migs[len(migs)-1].Version,
		"timescale", s.timescale)
	return applied, nil
}

const bootstrapSQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied by stacklens migrate (schema package): version, name, SHA-256 of the SQL, time.'`

// apply runs the bootstrap and the pending migrations.
func apply(ctx context.Context, db DB, migs []Migration, s settings, log *slog.Logger) (int, error) {
	var recorded map[int]string
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, bootstrapSQL); err != nil {
			return err
		}
		var err error
		recorded, err = checksums(ctx, tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("schema: preparing schema_migrations: %w", err)
	}
	known := map[int]bool{}
	for _, m := range migs {
		known[m.Version] = true
		if sum, ok := recorded[m.Version]; ok && sum != m.Checksum() {
			return 0, mismatch(m)
		}
	}
	for v := range recorded {
		if !known[v] {
			log.Warn("schema: database has a migration this binary does not know (newer binary?)", "version", v)
		}
	}
	n := 0
	for _, m := range migs {
		if _, ok := recorded[m.Version]; ok {
			continue
		}
		start := time.Now()
		did, err := applyOne(ctx, db, m, s)
		if err != nil {
			return n, err
		}
		if did {
			n++
			log.Info("schema: applied migration", "version", m.Version, "name", m.Name,
				"duration", time.Since(start).Round(time.Millisecond))
		}
	}
	return n, nil
}

func mismatch(m Migration) error {
	return fmt.Errorf("schema: migration %04d_%s: %w (checksum in schema_migrations differs from this binary's)", m.Version, m.Name, ErrChecksumMismatch)
}

func checksums(ctx context.Context, tx pgx.Tx) (map[int]string, error) {
	rows, err := tx.Query(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	var v int
	var sum string
	_, err = pgx.ForEachRow(rows, []any{&v, &sum}, func() error {
		out[v] = sum
		return nil
	})
	return out, err
}

// applyOne applies m unless another migrator recorded it meanwhile.
func applyOne(ctx context.Context, db DB, m Migration, s settings) (bool, error) {
	did, loc := false, ""
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		var sum string
		err := tx.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, m.Version).Scan(&sum)
		switch {
		case err == nil && sum == m.Checksum():
			return nil // applied concurrently
		case err == nil:
			return mismatch(m)
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if err := s.setGUCs(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			loc = where(m.SQL, err)
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
			m.Version, m.Name, m.Checksum()); err != nil {
			return err
		}
		did = true
		return nil
	})
	switch {
	case err == nil:
		return did, nil
	case errors.Is(err, ErrChecksumMismatch):
		return false, err
	default:
		return false, fmt.Errorf("schema: migration %04d_%s%s: %w", m.Version, m.Name, loc, err)
	}
}

// where turns a PostgreSQL error position into " (line N)".
func where(sql string, err error) string {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Position <= 0 {
		return ""
	}
	runes := []rune(sql)
	pos := min(int(pg.Position)-1, len(runes))
	return fmt.Sprintf(" (line %d)", strings.Count(string(runes[:pos]), "\n")+1)
}

// configure stores the options: retention days into analytics_settings,
// the windows' tables (stacklens_ensure_window) and their change
// notifications (stacklens_watch_metrics), TimescaleDB conversion and
// policies (stacklens_configure), role passwords.
func configure(ctx context.Context, db DB, s settings) error {
	return inTx(ctx, db, func(tx pgx.Tx) error {
		if err := s.setGUCs(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO analytics_settings (key, value)
		    SELECT k, d::text FROM (VALUES ('retention_hot_days', $1::int),
		                                   ('retention_warm_days', $2::int),
		                                   ('retention_cold_days', $3::int)) AS o (k, d)
		    WHERE d > 0
		    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
		    WHERE analytics_settings.value IS DISTINCT FROM EXCLUDED.value`,
			s.hot, s.warm, s.cold); err != nil {
			return err
		}
		// Before stacklens_configure, which makes the new tables hypertables.
		for _, w := range s.windows {
			if _, err := tx.Exec(ctx, `SELECT stacklens_ensure_window($1, $2)`, w.Name, w.Tier); err != nil {
				return fmt.Errorf("window %s: %w", w.Name, err)
			}
		}
		if _, err := tx.Exec(ctx, `SELECT stacklens_watch_metrics()`); err != nil {
			return fmt.Errorf("metrics change triggers: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT stacklens_configure()`); err != nil {
			return err
		}
		for _, rp := range [][2]string{{"stacklens_reader", s.reader}, {"stacklens_writer", s.writer}, {"stacklens_admin", s.admin}} {
			if rp[1] == "" {
				continue
			}
			if err := setPassword(ctx, tx, rp[0], rp[1]); err != nil {
				return fmt.Errorf("setting the password of %s: %w", rp[0], err)
			}
		}
		return nil
	})
}

// setPassword gives role LOGIN and the password, as a SCRAM-SHA-256 verifier
// passed through a transaction-local setting and quoted by format(%L) on the
// server.
func setPassword(ctx context.Context, tx pgx.Tx, role, password string) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('stacklens.role_name', $1, true),
	       set_config('stacklens.role_verifier', $2, true)`, role, scramVerifier(password)); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DO $$
BEGIN
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L',
                   current_setting('stacklens.role_name'),
                   current_setting('stacklens.role_verifier'));
END
$$`)
	return err
}

const scramPrefix = "SCRAM-SHA-256$"

func checkPassword(pw string) error {
	if strings.HasPrefix(pw, scramPrefix) {
		return nil
	}
	for _, r := range pw {
		if r < 0x20 || r > 0x7e {
			return errors.New("password must be printable ASCII or a SCRAM-SHA-256 verifier")
		}
	}
	return nil
}

// scramVerifier returns PostgreSQL's SCRAM-SHA-256 verifier for a printable
// ASCII password (for which SASLprep is the identity), or the password itself
// when it already is a verifier.
func scramVerifier(password string) string {
	if strings.HasPrefix(password, scramPrefix) {
		return password
	}
	const iterations = 4096
	salt := make([]byte, 16)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		panic(err) // only for FIPS-only parameter limits, which these are within
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s%d:%s$%s:%s", scramPrefix, iterations, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key")))
}

// inTx runs fn in a transaction holding the migrator's advisory lock.
func inTx(ctx context.Context, db DB, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, LockKey); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// StatusOf lists the embedded migrations and whether each is applied, plus
// any migration recorded in the database that this binary does not know.
func StatusOf(ctx context.Context, db DB) ([]Status, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("schema: status: %w", err)
	}
	recorded := map[int]Status{}
	if exists {
		rows, err := db.Query(ctx, `SELECT version, name, applied_at FROM schema_migrations`)
		if err != nil {
			return nil, fmt.Errorf("schema: status: %w", err)
		}
		var st Status
		if _, err := pgx.ForEachRow(rows, []any{&st.Version, &st.Name, &st.AppliedAt}, func() error {
			st.Applied = true
			recorded[st.Version] = st
			return nil
		}); err != nil {
			return nil, fmt.Errorf("schema: status: %w", err)
		}
	}
	out := make([]Status, 0, len(migs))
	for _, m := range migs {
		st, ok := recorded[m.Version]
		delete(recorded, m.Version)
		if !ok {
			st = Status{Version: m.Version}
		}
		st.Name = m.Name
		out = append(out, st)
	}
	for _, st := range recorded {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
