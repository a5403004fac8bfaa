package slo

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// readNow is the evaluation instant of the reader tests: 20 s into the
// minute 10:37, so the newest bucket of every table is partial.
var readNow = time.Date(2026, 12, 1, 10, 37, 20, 0, time.UTC)

// at is the instant hh:mm of readNow's day (hh may be negative: the day
// before).
func at(hh, mm int) time.Time {
	return time.Date(2026, 12, 1, hh, mm, 0, 0, time.UTC)
}

// conn is a connection to a fresh database, migrated unless bare.
func conn(t *testing.T, migrated bool) *pgx.Conn {
	t.Helper()
	pg := testenv.Postgres(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if migrated {
		if _, err := schema.Up(ctx, c, schema.Options{Timescale: "off"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// metric upserts one metrics row; lg is its latency_good object.
func metric(t *testing.T, c *pgx.Conn, table, service string, ts time.Time, count, errs int64, lg string) {
	t.Helper()
	if lg == "" {
		lg = "{}"
	}
	exec(t, c, `INSERT INTO analytics_metrics_`+table+` (service, timestamp, count, error_count, latency_good, final, version)
VALUES ($1, $2, $3, $4, $5, false, 1)`, service, ts, count, errs, lg)
}

// seedMetrics writes the rows the Sums and Statuses tests add up by hand.
// Rows outside every range read carry large counts, so that reading one
// would show.
func seedMetrics(t *testing.T, c *pgx.Conn) {
	t.Helper()
	for _, r := range []struct {
		table, service string
		ts             time.Time
		count, errs    int64
		lg             string
	}{
		{"1min", "checkout", at(10, 32), 1000, 1000, `{"300":0}`}, // before the 5m range
		{"1min", "checkout", at(10, 33), 100, 1, `{"300":90}`},
		{"1min", "checkout", at(10, 34), 100, 2, `{"300":80}`},
		{"1min", "checkout", at(10, 35), 100, 3, `{}`}, // the 300 ms threshold not counted here
		{"1min", "checkout", at(10, 36), 100, 4, `{"300":70,"250":60}`},
		{"1min", "checkout", at(10, 37), 50, 5, `{"300":40,"250":30}`},
		{"1min", "checkout", at(10, 38), 999, 0, `{"300":999}`}, // after now
		{"1min", "search", at(10, 35), 200, 20, `{"300":150}`},

		{"5min", "checkout", at(9, 35), 9000, 9000, ``}, // before the 1h range
		{"5min", "checkout", at(10, 5), 7, 0, ``},
		{"5min", "checkout", at(10, 10), 500, 10, ``},
		{"5min", "checkout", at(10, 35), 300, 30, ``},

		{"1hour", "checkout", at(4, 0), 5000, 5000, `{"300":0}`}, // before the 6h period
		{"1hour", "checkout", at(9, 0), 1000, 0, `{}`},
		{"1hour", "checkout", at(10, 0), 1000, 10, `{"300":900}`},
		{"1hour", "search", at(10, 0), 100, 0, `{"300":100}`},
	} {
		metric(t, c, r.table, r.service, r.ts, r.count, r.errs, r.lg)
	}
}

func req(service *string, key string, d time.Duration) Request {
	return Request{Service: service, Key: key, Range: RangeAt(d, readNow, window.Defaults())}
}

func TestSumsAddUpTheMetricsTables(t *testing.T) {
	c := conn(t, true)
	seedMetrics(t, c)
	co := ptr("checkout")
	reqs := []Request{
		req(co, "", 5*time.Minute),                // 1min 10:33..10:37
		req(nil, "", 5*time.Minute),               // every service
		req(co, "300", 5*time.Minute),             // without 10:35, which did not count 300
		req(nil, "300", 5*time.Minute),            // + search
		req(co, "250", 5*time.Minute),             // counted from 10:36 only
		req(co, "", 3*time.Minute),                // same series as the first, 10:35..10:37
		req(co, "", 30*time.Minute),               // 5min 10:10..10:35
		req(co, "", time.Hour),                    // 5min 09:40..10:35
		req(ptr("nobody"), "", 5*time.Minute),     // no rows
		req(co, ThresholdKey(999), 5*time.Minute), // a threshold never counted
		req(co, "", 6*time.Hour),                  // 1hour 05:00..10:00
		req(co, ThresholdKey(300), 6*time.Hour),   // 10:00 only
		req(ptr("search"), "300", 6*time.Hour),    // another service's series
		req(ptr("search"), "", time.Minute),       // the current minute only
		req(nil, "", 5*time.Minute),               // a duplicate request
		req(nil, "300", time.Hour),                // the 5min rows counted no threshold
		req(co, "", 2*time.Hour),                  // 5min 08:40..10:35
		req(co, "", 10*time.Minute),               // 1min 10:28..10:37
		// A series whose first range ends before its second's: it is read
		// up to the later end.
		{Key: "250", Range: Range{Window: window.Defaults()[0], First: at(10, 30), Last: at(10, 35)}},
		req(nil, "250", 5*time.Minute),
	}
	sums, err := Sums(context.Background(), c, reqs)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		good, total int64
		from        time.Time // zero: nil
	}
	wants := []want{
		{435, 450, at(10, 33)},
		{615, 650, at(10, 33)},
		{280, 350, at(10, 33)},
		{430, 550, at(10, 33)},
		{90, 150, at(10, 36)},
		{238, 250, at(10, 35)},
		{760, 800, at(10, 10)},
		{767, 807, at(10, 5)},
		{0, 0, time.Time{}},
		{0, 0, time.Time{}},
		{1990, 2000, at(9, 0)},
		{900, 1000, at(10, 0)},
		{100, 100, at(10, 0)},
		{0, 0, time.Time{}}, // search has no row at 10:37
		{615, 650, at(10, 33)},
		{0, 0, time.Time{}},
		{767, 9807, at(9, 35)},  // 09:35: 9000 events, all bad
		{435, 1450, at(10, 32)}, // 10:32: 1000 events, all bad
		{0, 0, time.Time{}},
		{90, 150, at(10, 36)},
	}
	for i, w := range wants {
		got := sums[i]
		var from time.Time
		if got.CountedFrom != nil {
			from = *got.CountedFrom
		}
		if got.Good != w.good || got.Total != w.total || !from.Equal(w.from) {
			t.Errorf("request %d %+v: good %d total %d counted from %v; want %d %d %v",
				i, reqs[i].Range, got.Good, got.Total, from, w.good, w.total, w.from)
		}
	}
}

// seedSLOs stores four SLOs (ids 1-4) and burn-rate alerts of the first.
func seedSLOs(t *testing.T, c *pgx.Conn) {
	t.Helper()
	exec(t, c, `INSERT INTO analytics_slos (id, name, service, objective, latency_threshold_ms, target, period, burn_alerts, notification_channels, enabled, description) VALUES
	(1, 'checkout availability', 'checkout', 'availability', NULL, 99, '6 hours', NULL, '{slack}', true, 'the shop'),
	(2, 'all latency', NULL, 'latency', 300, 90, '6 hours', '[]', '{}', false, ''),
	(3, 'unreachable', 'search', 'availability', NULL, 50, '1 day', '[{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}]', '{}', true, ''),
	(4, 'bad policy', 'payments', 'availability', NULL, 99.5, '30 days', '[{"severity":"sev1","burn_rate":2,"long":"1h","short":"5m"}]', '{email,pagerduty}', true, '')`)
	for _, a := range []struct {
		id     int64
		status string
		fired  time.Time
		entry  string
	}{
		{101, "active", at(8, 0), `{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}`},
		{102, "acknowledged", at(7, 0), `{"severity":"page","burn_rate":6,"long":"6h","short":"30m"}`},
		{103, "resolved", at(6, 0), `{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}`}, // not firing any more
	} {
		exec(t, c, `INSERT INTO analytics_alerts (id, alert_id, fingerprint, rule_name, service, severity, status, metric_name, fired_at, acknowledged_at, resolved_at, slo_id, slo_burn_alert)
VALUES ($1, $2, $2, 'checkout availability', 'checkout', 'critical', $3::text, 'burn_rate', $4,
	CASE WHEN $3::text = 'acknowledged' THEN $4::timestamptz + interval '10 minutes' END,
	CASE WHEN $3::text = 'resolved' THEN $4::timestamptz + interval '1 hour' END, 1, $5)`,
			a.id, "a"+a.status, a.status, a.fired, a.entry)
	}
}

func TestLoadDefinitions(t *testing.T) {
	c := conn(t, true)
	seedSLOs(t, c)
	ctx := context.Background()
	defs, invalid, err := LoadDefinitions(ctx, c, nil, false)
	if err != nil || len(defs) != 4 || len(invalid) != 4 {
		t.Fatalf("all: %d definitions, %d reasons, %v", len(defs), len(invalid), err)
	}
	d := defs[0]
	if d.ID != 1 || d.Name != "checkout availability" || d.Service == nil || *d.Service != "checkout" || d.Objective != Availability ||
		d.LatencyThresholdMS != nil || d.Target != 99 || d.Period != 6*time.Hour || d.BurnAlerts != nil || len(d.Policy()) != 4 ||
		strings.Join(d.NotificationChannels, ",") != "slack" || !d.Enabled || d.Description != "the shop" || invalid[0] != "" {
		t.Errorf("definition 1: %+v (%q)", d, invalid[0])
	}
	d = defs[1]
	if d.Service != nil || d.Objective != Latency || d.LatencyThresholdMS == nil || *d.LatencyThresholdMS != 300 || d.ThresholdKey() != "300" ||
		d.BurnAlerts == nil || len(d.Policy()) != 0 || d.Enabled || len(d.NotificationChannels) != 0 || invalid[1] != "" {
		t.Errorf("definition 2: %+v (%q)", d, invalid[1])
	}
	// Each definition has its own service: the rows are not aliased.
	if *defs[2].Service != "search" || *defs[3].Service != "payments" || *defs[0].Service != "checkout" {
		t.Errorf("services %q %q %q", *defs[0].Service, *defs[2].Service, *defs[3].Service)
	}
	if !strings.HasPrefix(invalid[2], "burn_alerts[0].burn_rate: 14.4 can never be reached") || len(defs[2].BurnAlerts) != 1 {
		t.Errorf("definition 3: %q, policy %v", invalid[2], defs[2].BurnAlerts)
	}
	if !strings.HasPrefix(invalid[3], "burn_alerts[0].severity") || defs[3].BurnAlerts != nil || len(defs[3].Policy()) != 4 ||
		defs[3].Period != 30*24*time.Hour || strings.Join(defs[3].NotificationChannels, ",") != "email,pagerduty" {
		t.Errorf("definition 4: %q, %+v", invalid[3], defs[3])
	}

	id := int64(3)
	if defs, invalid, err := LoadDefinitions(ctx, c, &id, false); err != nil || len(defs) != 1 || defs[0].ID != 3 || invalid[0] == "" {
		t.Errorf("by id: %+v %q %v", defs, invalid, err)
	}
	id = 2
	if defs, _, err := LoadDefinitions(ctx, c, &id, true); err != nil || len(defs) != 0 {
		t.Errorf("a disabled one, enabled only: %+v %v", defs, err)
	}
	defs, _, err = LoadDefinitions(ctx, c, nil, true)
	if err != nil || len(defs) != 3 || defs[0].ID != 1 || defs[1].ID != 3 || defs[2].ID != 4 {
		t.Errorf("enabled only: %+v %v", defs, err)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestStatusesFromTheDatabase(t *testing.T) {
	c := conn(t, true)
	seedMetrics(t, c)
	seedSLOs(t, c)
	ctx := context.Background()
	defs, invalid, err := LoadDefinitions(ctx, c, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Statuses(ctx, c, defs, invalid, readNow, window.Defaults())
	if err != nil || len(st) != 4 {
		t.Fatalf("%d statuses, %v", len(st), err)
	}

	// checkout availability, 99 % over 6h: the hours 05:00..10:00 hold
	// 2000 events, 10 bad; the budget is 20 events, half spent.
	s := st[0]
	if s.ID != 1 || s.Period != "6h" || !s.PeriodStart.Equal(at(5, 0)) || s.CountedFrom != nil ||
		s.TotalEvents != 2000 || s.GoodEvents != 1990 || s.BadEvents != 10 || !near(*s.Compliance, 99.5) {
		t.Errorf("checkout: %+v", s)
	}
	eb := s.ErrorBudget
	if !near(eb.TotalEvents, 20) || eb.ConsumedEvents != 10 || !near(eb.RemainingEvents, 10) ||
		!near(*eb.ConsumedRatio, 0.5) || !near(*eb.RemainingRatio, 0.5) {
		t.Errorf("checkout budget: %+v", eb)
	}
	// 5m: 15 bad of 450 on a 1 % budget; 30m: 40 of 800; 1h: 40 of 807;
	// 6h: 10 of 2000; 2h: 9040 of 9807 (with 09:35).
	for w, rate := range map[string]float64{"5m": 15.0 / 450 / 0.01, "30m": 40.0 / 800 / 0.01, "1h": 40.0 / 807 / 0.01,
		"2h": 9040.0 / 9807 / 0.01, "6h": 10.0 / 2000 / 0.01} {
		if got := s.BurnRates[w]; got == nil || !near(*got, rate) {
			t.Errorf("checkout burn rate %s: %v, want %v", w, got, rate)
		}
	}
	// 10 events of budget left, 40 bad events in the 1h window's 57m20s.
	if s.TimeToExhaustionSeconds == nil || !near(*s.TimeToExhaustionSeconds, 10/(40.0/3440)) {
		t.Errorf("checkout time to exhaustion: %v, want 860", s.TimeToExhaustionSeconds)
	}
	if len(s.FiringAlerts) != 2 || s.FiringAlerts[0].ID != 102 || s.FiringAlerts[1].ID != 101 ||
		!s.FiringAlerts[0].StartedAt.Equal(at(7, 0)) || s.FiringAlerts[0].Severity != Page || s.FiringAlerts[0].BurnRate != 6 ||
		time.Duration(s.FiringAlerts[0].Long) != 6*time.Hour || time.Duration(s.FiringAlerts[0].Short) != 30*time.Minute ||
		s.FiringAlerts[1].BurnRate != 14.4 || !s.FiringAlerts[1].StartedAt.Equal(at(8, 0)) {
		t.Errorf("checkout firing alerts: %+v", s.FiringAlerts)
	}

	// every service, latency <= 300 ms, 90 %: only the hour 10:00 counted
	// the threshold: 1100 events, 1000 good.
	s = st[1]
	if s.CountedFrom == nil || !s.CountedFrom.Equal(at(10, 0)) || s.TotalEvents != 1100 || s.GoodEvents != 1000 ||
		!near(*s.Compliance, 100*1000.0/1100) || len(s.FiringAlerts) != 0 || s.FiringAlerts == nil || s.Invalid != "" {
		t.Errorf("latency: %+v", s)
	}
	// 5m: the minutes that counted 300 ms, both services: 120 bad of 550.
	if got := s.BurnRates["5m"]; got == nil || !near(*got, 120.0/550/0.1) {
		t.Errorf("latency 5m burn rate: %v", got)
	}
	if got := s.BurnRates["1h"]; got != nil {
		t.Errorf("latency 1h burn rate without counted buckets: %v", *got)
	}
	if !strings.HasPrefix(st[2].Invalid, "burn_alerts[0].burn_rate") || !strings.HasPrefix(st[3].Invalid, "burn_alerts[0].severity") {
		t.Errorf("invalid reasons: %q %q", st[2].Invalid, st[3].Invalid)
	}
	// search: no 1hour row in its 1d period but 10:00's.
	if st[2].TotalEvents != 100 || st[2].GoodEvents != 100 || st[3].TotalEvents != 0 || st[3].Compliance != nil {
		t.Errorf("search %d/%d, payments %d", st[2].GoodEvents, st[2].TotalEvents, st[3].TotalEvents)
	}

	// Without the period: the burn windows only.
	evs, err := Evaluate(ctx, c, defs[:1], readNow, window.Defaults(), false)
	if err != nil || len(evs) != 1 || evs[0].Period.Total != 0 || evs[0].Period.CountedFrom != nil ||
		evs[0].Burn[5*time.Minute] != (Counts{Good: 435, Total: 450}) || evs[0].Burn[72*time.Hour] != (Counts{Good: 1990, Total: 7000}) /* with 04:00 */ {
		t.Errorf("evaluate without the period: %+v %v", evs, err)
	}
}

func TestHistoryIsTheRollingPeriodAtEachStep(t *testing.T) {
	c := conn(t, true)
	ctx := context.Background()
	// Hour h of the day (0..9) holds 100(h+1) events, h of them bad; an
	// other service's row must count only for every-service SLOs.
	for h := range 10 {
		metric(t, c, "1hour", "hist", at(h, 0), int64(100*(h+1)), int64(h), "")
	}
	metric(t, c, "1hour", "other", at(5, 0), 1_000_000, 0, "")
	d := &Definition{ID: 1, Name: "hist", Service: ptr("hist"), Objective: Availability, Target: 99, Period: 6 * time.Hour}
	step, points, err := History(ctx, c, d, at(4, 30), at(11, 0), window.Defaults())
	if err != nil || step != time.Hour {
		t.Fatalf("step %v, %v", step, err)
	}
	// Each point is the six complete hours before it; the budget is 1 %.
	want := []struct {
		at          time.Time
		good, total int64
		remaining   float64
	}{
		{at(5, 0), 1490, 1500, 5.0 / 15},  // hours 0..4
		{at(6, 0), 2085, 2100, 6.0 / 21},  // 0..5
		{at(7, 0), 2679, 2700, 6.0 / 27},  // 1..6
		{at(8, 0), 3273, 3300, 6.0 / 33},  // 2..7
		{at(9, 0), 3867, 3900, 6.0 / 39},  // 3..8
		{at(10, 0), 4461, 4500, 6.0 / 45}, // 4..9
		{at(11, 0), 3965, 4000, 5.0 / 40}, // 5..9
	}
	if len(points) != len(want) {
		t.Fatalf("%d points: %+v", len(points), points)
	}
	for i, w := range want {
		p := points[i]
		if !p.Time.Equal(w.at) || p.Good != w.good || p.Total != w.total || !near(*p.Compliance, 100*float64(w.good)/float64(w.total)) ||
			!near(*p.BudgetRemainingRatio, w.remaining) {
			t.Errorf("point %d: %v %d/%d %v %v; want %v %d/%d remaining %v", i, p.Time, p.Good, p.Total, *p.Compliance,
				*p.BudgetRemainingRatio, w.at, w.good, w.total, w.remaining)
		}
	}
	// Every service: the other service's hour counts from 06:00 to 11:00.
	all := *d
	all.Service = nil
	_, points, err = History(ctx, c, &all, at(6, 0), at(6, 0), window.Defaults())
	if err != nil || len(points) != 1 || points[0].Total != 1_002_100 || points[0].Good != 1_002_085 {
		t.Fatalf("every service at 06:00: %+v %v", points, err)
	}
	// Before any data: points without events, null figures.
	_, points, err = History(ctx, c, d, at(-6, 0), at(-5, 0), window.Defaults())
	if err != nil || len(points) != 2 || points[0].Total != 0 || points[0].Compliance != nil || points[1].BudgetRemainingRatio != nil {
		t.Fatalf("before the data: %+v %v", points, err)
	}
	// No step boundary in [from, to]: no points, an empty list.
	step, points, err = History(ctx, c, d, at(5, 1), at(5, 59), window.Defaults())
	if err != nil || step != time.Hour || points == nil || len(points) != 0 {
		t.Fatalf("no boundary: %v %+v %v", step, points, err)
	}
}

func TestHistoryOfALatencyObjective(t *testing.T) {
	c := conn(t, true)
	// The threshold was counted from 02:00: the earlier hours are left out
	// of good and total alike.
	metric(t, c, "1hour", "api", at(0, 0), 100, 0, `{}`)
	metric(t, c, "1hour", "api", at(1, 0), 100, 0, `{"250":1}`)
	metric(t, c, "1hour", "api", at(2, 0), 100, 0, `{"300":95}`)
	metric(t, c, "1hour", "api", at(3, 0), 200, 50, `{"300":150,"250":10}`)
	d := &Definition{Name: "api latency", Service: ptr("api"), Objective: Latency, LatencyThresholdMS: ptr(300.0), Target: 90, Period: 6 * time.Hour}
	_, points, err := History(context.Background(), c, d, at(3, 0), at(4, 0), window.Defaults())
	if err != nil || len(points) != 2 {
		t.Fatalf("%+v %v", points, err)
	}
	// 03:00: hour 2 only (95/100); 04:00: hours 2 and 3 (245/300).
	if points[0].Good != 95 || points[0].Total != 100 || points[1].Good != 245 || points[1].Total != 300 ||
		!near(*points[1].BudgetRemainingRatio, (30-55)/30.0) {
		t.Fatalf("points %+v", points)
	}
}

func TestHistoryStep(t *testing.T) {
	day := append(window.Defaults(), window.MustParse("1day"))
	seven := []window.Window{window.MustParse("7min")}
	for _, c := range []struct {
		period  time.Duration
		windows []window.Window
		want    time.Duration
	}{
		{6 * time.Hour, window.Defaults(), time.Hour}, // 1hour table
		{time.Hour, window.Defaults(), time.Hour},     // 5min table: still hourly points
		{30 * 24 * time.Hour, day, 24 * time.Hour},    // 1day table: daily
		{7 * time.Hour, seven, 7 * time.Minute},       // 7min does not divide an hour
		{30 * 24 * time.Hour, nil, time.Hour},         // no windows: the defaults
	} {
		d := &Definition{Period: c.period}
		if got := HistoryStep(d, c.windows); got != c.want {
			t.Errorf("HistoryStep(%v, %v) = %v, want %v", c.period, c.windows, got, c.want)
		}
	}
}

// TestReadersReportDatabaseErrors: a missing table (a window configured
// without its metrics table, a database not migrated) or a corrupt
// latency_good value fails the read with its context, never zero counts.
func TestReadersReportDatabaseErrors(t *testing.T) {
	ctx := context.Background()
	c := conn(t, true)
	seedSLOs(t, c)
	day := append(window.Defaults(), window.MustParse("1day"))
	d := Definition{ID: 1, Name: "x", Service: ptr("checkout"), Objective: Availability, Target: 99, Period: 30 * 24 * time.Hour}

	_, err := Sums(ctx, c, []Request{{Key: "", Range: RangeAt(30*24*time.Hour, readNow, day)}})
	if err == nil || !strings.HasPrefix(err.Error(), "sum metrics: ") || !strings.Contains(err.Error(), "analytics_metrics_1day") {
		t.Errorf("sums over a missing table: %v", err)
	}
	if _, err := Statuses(ctx, c, []Definition{d}, nil, readNow, day); err == nil || !strings.Contains(err.Error(), "analytics_metrics_1day") {
		t.Errorf("statuses over a missing table: %v", err)
	}
	if _, _, err := History(ctx, c, &d, at(0, 0), at(1, 0), day); err == nil || !strings.HasPrefix(err.Error(), "slo history: ") {
		t.Errorf("history over a missing table: %v", err)
	}

	// A latency_good count that is not a number.
	metric(t, c, "1min", "checkout", at(10, 36), 10, 0, `{"300":"many"}`)
	metric(t, c, "1hour", "checkout", at(5, 0), 10, 0, `{"300":"many"}`)
	lat := d
	lat.Objective, lat.LatencyThresholdMS, lat.Period = Latency, ptr(300.0), 6*time.Hour
	if _, err := Sums(ctx, c, []Request{requestOf(&lat, RangeAt(5*time.Minute, readNow, nil))}); err == nil ||
		!strings.HasPrefix(err.Error(), "sum analytics_metrics_1min: ") {
		t.Errorf("sums over a corrupt count: %v", err)
	}
	if _, _, err := History(ctx, c, &lat, at(6, 0), at(7, 0), nil); err == nil || !strings.HasPrefix(err.Error(), "slo history: ") {
		t.Errorf("history over a corrupt count: %v", err)
	}

	// A burn-rate alert whose entry is not one.
	exec(t, c, `INSERT INTO analytics_alerts (id, alert_id, fingerprint, rule_name, service, severity, metric_name, slo_id, slo_burn_alert)
VALUES (200, 'bad', 'bad', 'x', 'checkout', 'critical', 'burn_rate', 1, '{"severity":"page","long":5}')`)
	if _, err := FiringAlerts(ctx, c, []int64{1}); err == nil || !strings.Contains(err.Error(), "alert 200: slo_burn_alert: ") {
		t.Errorf("firing alerts with a corrupt entry: %v", err)
	}
	if _, err := Statuses(ctx, c, []Definition{d}, nil, readNow, nil); err == nil || !strings.Contains(err.Error(), "alert 200") {
		t.Errorf("statuses with a corrupt alert entry: %v", err)
	}

	bare := conn(t, false)
	if _, _, err := LoadDefinitions(ctx, bare, nil, false); err == nil || !strings.HasPrefix(err.Error(), "load slos: ") {
		t.Errorf("load from a database without the schema: %v", err)
	}
	if _, err := FiringAlerts(ctx, bare, []int64{1}); err == nil || !strings.HasPrefix(err.Error(), "firing slo alerts: ") {
		t.Errorf("firing alerts from a database without the schema: %v", err)
	}
}
