package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/slo"
	"github.com/stacklens/stacklens/internal/window"
)

// sloTraffic is synthetic traffic of exactly known ratios: per minute
// 1000 events, 20 of them errors (2 %) and 10 slower than 300 ms (1 %);
// the current minute (partial) has half of each.
type sloTraffic struct {
	now time.Time
	// from is the first minute with traffic; keyFrom the first with the
	// latency_good key "300" (the threshold was defined then).
	from, keyFrom time.Time
}

func (tr sloTraffic) minute(m time.Time) (count, errs, slow int64) {
	switch {
	case m.Before(tr.from) || m.After(tr.now):
		return 0, 0, 0
	case m.Equal(tr.now.Truncate(time.Minute)):
		return 500, 10, 5
	}
	return 1000, 20, 10
}

// insert writes the rows of service for every window table, each bucket
// the sum of its minutes (as the processor folds them).
func (tr sloTraffic) insert(t *testing.T, db *pgx.Conn, service string, errScale int64) {
	t.Helper()
	ctx := context.Background()
	for _, w := range window.Defaults() {
		for b := w.Start(tr.from); !b.After(tr.now); b = b.Add(w.Size) {
			var count, errs, good int64
			key := !b.Before(tr.keyFrom)
			for m := b; m.Before(b.Add(w.Size)); m = m.Add(time.Minute) {
				c, e, s := tr.minute(m)
				count, errs, good = count+c, errs+e*errScale, good+c-s
				if m.Before(tr.keyFrom) {
					key = false // a bucket opened before the threshold was not counted for it
				}
			}
			if count == 0 {
				continue
			}
			lg := `{}`
			if key {
				lg = fmt.Sprintf(`{"300": %d, "50": 0}`, good)
			}
			if _, err := db.Exec(ctx, `INSERT INTO analytics_metrics_`+w.Name+` (service, timestamp, count, error_count, latency_good)
				VALUES ($1, $2, $3, $4, $5)`, service, b, count, errs, lg); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func sloFixture(t *testing.T, now time.Time) *fixture {
	t.Helper()
	dsn, db, seeded := newDB(t)
	cfg := testConfig(dsn)
	srv, err := New(cfg, Deps{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	return &fixture{t: t, dsn: dsn, db: db, srv: srv, now: seeded}
}

func fptr(v float64) *float64 { return &v }

func eqPtr(t *testing.T, what string, got, want *float64) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
	case *got != *want:
		t.Errorf("%s = %v, want %v", what, *got, *want)
	}
}

// TestSLOStatus: every status figure of GET /slos equals the arithmetic
// of docs/slo.md for synthetic traffic of known error and latency ratios,
// at a fake clock, including latency windows without the threshold's key.
func TestSLOStatus(t *testing.T) {
	// 100 days before the seed's rows, so they are outside every window.
	now := time.Now().UTC().Add(-100 * 24 * time.Hour).Truncate(time.Hour).Add(37*time.Minute + 20*time.Second)
	f := sloFixture(t, now)
	ctx := context.Background()
	tr := sloTraffic{now: now, from: now.Truncate(time.Hour).Add(-80 * time.Hour), keyFrom: now.Truncate(time.Hour).Add(-10 * time.Hour)}
	tr.insert(t, f.db, "shop", 1)
	tr.insert(t, f.db, "quiet", 0) // no errors
	for _, sql := range []string{
		`INSERT INTO analytics_slos (id, name, service, objective, target, period, notification_channels) VALUES (11, 'shop availability', 'shop', 'availability', 99.9, '30 days', '{slack}')`,
		`INSERT INTO analytics_slos (id, name, service, objective, latency_threshold_ms, target, period, burn_alerts) VALUES (12, 'shop fast', 'shop', 'latency', 300, 99, '7 days', '[{"severity":"ticket","burn_rate":0.5,"long":"12h","short":"1h"}]')`,
		`INSERT INTO analytics_slos (id, name, objective, target, period) VALUES (13, 'everything', 'availability', 99, '1 day')`,
		`INSERT INTO analytics_slos (id, name, service, objective, target) VALUES (14, 'idle', 'nobody', 'availability', 99.5)`,
		// Written by hand with a policy the API would refuse.
		`INSERT INTO analytics_slos (id, name, service, objective, target, burn_alerts) VALUES (15, 'odd', 'shop', 'availability', 99, '[{"severity":"sev1","burn_rate":2,"long":"1h","short":"5m"}]')`,
		// An open page of SLO 11 and a resolved one (not listed).
		`INSERT INTO analytics_alerts (id, alert_id, fingerprint, rule_name, service, severity, metric_name, fired_at, slo_id, slo_burn_alert)
		 VALUES (42, 'slo-a', 'slo-fp', 'shop availability', 'shop', 'critical', 'burn_rate', '2026-08-23T05:00:00Z', 11, '{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}')`,
		`INSERT INTO analytics_alerts (id, alert_id, fingerprint, rule_name, service, severity, status, metric_name, resolved_at, slo_id, slo_burn_alert)
		 VALUES (43, 'slo-b', 'slo-fp', 'shop availability', 'shop', 'critical', 'resolved', 'burn_rate', now(), 11, '{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}')`,
	} {
		if _, err := f.db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// The status endpoints read only the metrics tables: take
	// analytics_events away from the reader role.
	if _, err := f.db.Exec(ctx, `REVOKE SELECT ON analytics_events FROM stacklens_reader`); err != nil {
		t.Fatal(err)
	}

	var list SLOsResponse
	if err := json.Unmarshal(f.mustGet("/slos"), &list); err != nil {
		t.Fatal(err)
	}
	byID := map[int64]slo.Status{}
	for _, s := range list.SLOs {
		byID[s.ID] = s
	}
	if len(list.SLOs) != 6 { // the seed's one and ours
		t.Fatalf("%d SLOs", len(list.SLOs))
	}

	// Minutes of traffic up to a minute boundary, counted by hand.
	minutes := func(from, to time.Time) int64 { return int64(to.Sub(from) / time.Minute) }
	full := minutes(tr.from, now.Truncate(time.Minute)) // 80 h + 37 min
	if full != 80*60+37 {
		t.Fatalf("full minutes %d", full)
	}

	// shop availability, 99.9 % over 30 d: every event since tr.from
	// (all within the period); 2 % bad → 20x everywhere.
	s := byID[11]
	total := full*1000 + 500
	bad := full*20 + 10
	target := 99.9
	if s.TotalEvents != total || s.BadEvents != bad || s.GoodEvents != total-bad {
		t.Fatalf("shop availability counts %d/%d/%d, want %d/%d", s.TotalEvents, s.GoodEvents, s.BadEvents, total, bad)
	}
	eqPtr(t, "compliance", s.Compliance, fptr(100*float64(total-bad)/float64(total)))
	budget := slo.BudgetFraction(target) * float64(total)
	if s.ErrorBudget.TotalEvents != budget || s.ErrorBudget.ConsumedEvents != bad || s.ErrorBudget.RemainingEvents != budget-float64(bad) {
		t.Errorf("budget %+v", s.ErrorBudget)
	}
	eqPtr(t, "consumed ratio", s.ErrorBudget.ConsumedRatio, fptr(float64(bad)/budget))
	eqPtr(t, "remaining ratio", s.ErrorBudget.RemainingRatio, fptr((budget-float64(bad))/budget))
	// Burn windows: the 1h window is the 12 five-minute buckets 09:40..10:35
	// (hh = now's hour), the newest holding 2 full minutes and the partial one.
	w1h := Counts(11*5*1000+2*1000+500, 11*5*20+2*20+10)
	w5m := Counts(4*1000+500, 4*20+10) // minutes hh:33..hh:37
	w6h := Counts(5*60*1000+37*1000+500, 5*60*20+37*20+10)
	for name, c := range map[string]slo.Counts{"1h": w1h, "5m": w5m, "6h": w6h} {
		eqPtr(t, "burn "+name, s.BurnRates[name], fptr(float64(c.Bad())/float64(c.Total)/slo.BudgetFraction(target)))
	}
	if r := *s.BurnRates["1h"]; r != 20 {
		t.Errorf("1h burn %v, want 20x", r)
	}
	eqPtr(t, "time to exhaustion", s.TimeToExhaustionSeconds, fptr(0)) // budget long spent (2 % > 0.1 %)
	if s.ErrorBudget.RemainingEvents >= 0 {
		t.Errorf("remaining %v", s.ErrorBudget.RemainingEvents)
	}
	if s.PeriodStart != now.Truncate(time.Hour).Add(-719*time.Hour) || s.Period != "30d" || s.CountedFrom != nil || len(s.BurnAlerts) != 4 ||
		len(s.NotificationChannels) != 1 || !s.EvaluatedAt.Equal(now) {
		t.Errorf("shop availability %+v", s)
	}

	// shop fast, latency 300 ms at 99 % over 7 d: only buckets opened since
	// keyFrom counted the threshold; 1 % slow → 1x (a decimal 1 that
	// binary arithmetic may miss by ulps).
	s = byID[12]
	lat := full - minutes(tr.from, tr.keyFrom)
	total, bad = lat*1000+500, lat*10+5
	if s.TotalEvents != total || s.BadEvents != bad || s.CountedFrom == nil || !s.CountedFrom.Equal(tr.keyFrom) {
		t.Fatalf("shop fast %d/%d from %v; want %d/%d from %v", s.TotalEvents, s.BadEvents, s.CountedFrom, total, bad, tr.keyFrom)
	}
	eqPtr(t, "latency compliance", s.Compliance, fptr(100*float64(total-bad)/float64(total)))
	eqPtr(t, "latency burn 1h", s.BurnRates["1h"], fptr(float64(w1h.Total/100)/float64(w1h.Total)/slo.BudgetFraction(99)))
	if *s.BurnRates["1h"] != 1 || s.BurnRates["12h"] == nil || len(s.BurnAlerts) != 1 {
		t.Errorf("latency burn rates %v, policy %v", s.BurnRates, s.BurnAlerts)
	}
	// Budget: 1 % of events, 1 % spent.
	wantRem := slo.BudgetFraction(99)*float64(total) - float64(bad)
	if s.ErrorBudget.RemainingEvents != wantRem {
		t.Errorf("latency remaining %v, want %v", s.ErrorBudget.RemainingEvents, wantRem)
	}

	// everything, 99 % over 1 d: shop and quiet together; 1 % bad → 1x.
	s = byID[13]
	day := minutes(now.Truncate(time.Hour).Add(-23*time.Hour), now.Truncate(time.Minute))
	total, bad = 2*(day*1000+500), day*20+10
	if s.TotalEvents != total || s.BadEvents != bad {
		t.Fatalf("everything %d/%d, want %d/%d", s.TotalEvents, s.BadEvents, total, bad)
	}
	budget = slo.BudgetFraction(99) * float64(total)
	eqPtr(t, "everything 1d burn", s.BurnRates["1d"], fptr(float64(bad)/float64(total)/slo.BudgetFraction(99)))
	// 1h window: w1h.Bad() bad events (quiet has none) in its span of
	// 3440 s, 09:40:00 to 10:37:20.
	eqPtr(t, "everything time to exhaustion", s.TimeToExhaustionSeconds, fptr((budget-float64(bad))/(float64(w1h.Bad())/3440)))

	// The open alert is listed; the resolved one not.
	if fa := byID[11].FiringAlerts; len(fa) != 1 || fa[0].ID != 42 || fa[0].Severity != "page" || fa[0].BurnRate != 14.4 ||
		time.Duration(fa[0].Long) != time.Hour || time.Duration(fa[0].Short) != 5*time.Minute ||
		!fa[0].StartedAt.Equal(time.Date(2026, 8, 23, 5, 0, 0, 0, time.UTC)) {
		t.Errorf("firing alerts %+v", fa)
	}
	// A stored definition that does not validate is reported, and why.
	if s := byID[15]; !strings.Contains(s.Invalid, "burn_alerts[0].severity") || s.TotalEvents == 0 {
		t.Errorf("invalid SLO: %q, %d events", s.Invalid, s.TotalEvents)
	}
	if byID[11].Invalid != "" {
		t.Errorf("valid SLO reported invalid: %s", byID[11].Invalid)
	}

	// idle: no events → nulls.
	s = byID[14]
	if s.TotalEvents != 0 || s.Compliance != nil || s.ErrorBudget.RemainingRatio != nil || s.BurnRates["1h"] != nil || s.TimeToExhaustionSeconds != nil {
		t.Errorf("idle %+v", s)
	}

	// GET /slos/{id} is the same status; 404 for an unknown id.
	var one slo.Status
	if err := json.Unmarshal(f.mustGet("/slos/11"), &one); err != nil || one.TotalEvents != byID[11].TotalEvents {
		t.Fatalf("GET /slos/11: %v %+v", err, one)
	}
	f.expectError("GET", "/slos/999", "", nil, 404, "id")
	f.expectError("GET", "/slos/x", "", nil, 400, "id")
	t.Logf("GET /slos/11: %s", f.mustGet("/slos/11"))
}

// TestSLOResponsesKeyedByPath: coalesced and cached responses are keyed by
// the request's path, so two SLOs of one route never share an answer.
func TestSLOResponsesKeyedByPath(t *testing.T) {
	dsn, db, seeded := newDB(t)
	cfg := testConfig(dsn)
	cfg.CacheTTL = time.Minute
	srv, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: seeded}
	if _, err := db.Exec(context.Background(), `INSERT INTO analytics_slos (id, name, objective, target) VALUES (31, 'a', 'availability', 99), (32, 'b', 'availability', 99.5)`); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{31, 32} {
		var s slo.Status
		if err := json.Unmarshal(f.mustGet(fmt.Sprintf("/slos/%d", id)), &s); err != nil || s.ID != id {
			t.Fatalf("GET /slos/%d answered SLO %d (%v)", id, s.ID, err)
		}
		var h SLOHistoryResponse
		if err := json.Unmarshal(f.mustGet(fmt.Sprintf("/slos/%d/history", id)), &h); err != nil || h.ID != id {
			t.Fatalf("GET /slos/%d/history answered SLO %d (%v)", id, h.ID, err)
		}
	}
}

// Counts is a test shorthand: total and bad events.
func Counts(total, bad int64) slo.Counts { return slo.Counts{Good: total - bad, Total: total} }

// TestSLOHistory: each point is the rolling period before it, from the
// period's table, one per hour.
func TestSLOHistory(t *testing.T) {
	now := time.Now().UTC().Add(-100 * 24 * time.Hour).Truncate(time.Hour).Add(37*time.Minute + 20*time.Second)
	f := sloFixture(t, now)
	ctx := context.Background()
	tr := sloTraffic{now: now, from: now.Truncate(time.Hour).Add(-80 * time.Hour), keyFrom: now.Truncate(time.Hour).Add(-10 * time.Hour)}
	tr.insert(t, f.db, "shop", 1)
	if _, err := f.db.Exec(ctx, `INSERT INTO analytics_slos (id, name, service, objective, target, period) VALUES (21, 'shop 6h', 'shop', 'availability', 99.9, '6 hours');
		INSERT INTO analytics_slos (id, name, service, objective, latency_threshold_ms, target, period) VALUES (22, 'shop fast 6h', 'shop', 'latency', 300, 99, '6 hours');
		REVOKE SELECT ON analytics_events FROM stacklens_reader`); err != nil {
		t.Fatal(err)
	}
	from := tr.from.Add(-2 * time.Hour)
	to := tr.from.Add(8*time.Hour + 30*time.Minute)
	var h SLOHistoryResponse
	if err := json.Unmarshal(f.mustGet(fmt.Sprintf("/slos/21/history?from=%s&to=%s", from.Format(time.RFC3339), to.Format(time.RFC3339))), &h); err != nil {
		t.Fatal(err)
	}
	if h.ID != 21 || h.StepSeconds != 3600 || len(h.Points) != 11 {
		t.Fatalf("history: id %d step %d, %d points", h.ID, h.StepSeconds, len(h.Points))
	}
	for i, p := range h.Points {
		hours := min(max(int64(i)-2, 0), 6) // hours of traffic in the 6 h before the point
		want := Counts(hours*60_000, hours*1200)
		if !p.Time.Equal(from.Add(time.Duration(i)*time.Hour)) || p.Total != want.Total || p.Good != want.Good {
			t.Errorf("point %d: %v %d/%d, want %d/%d", i, p.Time, p.Good, p.Total, want.Good, want.Total)
		}
		eqPtr(t, "point compliance", p.Compliance, slo.Compliance(want))
		eqPtr(t, "point budget", p.BudgetRemainingRatio, slo.ErrorBudget(want, 99.9).RemainingRatio)
	}
	// The latency SLO counts only the hours since keyFrom (70 h after from).
	if err := json.Unmarshal(f.mustGet(fmt.Sprintf("/slos/22/history?from=%s", tr.keyFrom.Add(-time.Hour).Format(time.RFC3339))), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Points) != 12 || h.Points[0].Total != 0 || h.Points[1].Total != 0 || h.Points[2].Total != 60_000 || h.Points[2].Good != 59_400 ||
		h.Points[10].Total != 6*60_000 {
		t.Fatalf("latency history %+v", h.Points)
	}
	f.expectError("GET", "/slos/21/history?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "", nil, 400, "")
	f.expectError("GET", "/slos/21/history?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "", nil, 400, "from")
	f.expectError("GET", "/slos/999/history", "", nil, 404, "id")
	// Past 2262 a Duration since 1970 saturates: the points must still be
	// one per hour of the range, not every hour since 1677.
	if err := json.Unmarshal(f.mustGet("/slos/21/history?from=2300-01-01T00:00:00Z&to=2300-01-02T00:00:00Z"), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Points) != 25 || !h.Points[0].Time.Equal(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("history in 2300: %d points %+v", len(h.Points), h.Points[:min(len(h.Points), 2)])
	}
}

// TestSLOStatusCache: with API_SLO_CACHE_TTL a status answer is reused for
// the same request until it is that old — a definition written elsewhere
// (SQL here, another replica in production) shows after the TTL — while an
// SLO write through this API drops it at once; with 0 every sequential
// request computes its own.
func TestSLOStatusCache(t *testing.T) {
	ctx := context.Background()
	for _, ttl := range []time.Duration{time.Minute, 0} {
		dsn, db, seeded := newDB(t)
		var mu sync.Mutex
		clock := time.Now()
		cfg := testConfig(dsn)
		cfg.API.SLOCacheTTL = ttl
		withCreds(&cfg)
		srv, err := New(cfg, Deps{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.closePools)
		f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: seeded}
		count := func() int {
			resp, body := f.request("GET", "/slos", "", bearer(readerKey))
			var r SLOsResponse
			if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET /slos: %d %s", resp.StatusCode, body)
			}
			return len(r.SLOs)
		}
		status := func(id int) int {
			resp, _ := f.request("GET", fmt.Sprintf("/slos/%d", id), "", bearer(readerKey))
			return resp.StatusCode
		}
		n0 := count()
		if _, err := db.Exec(ctx, `INSERT INTO analytics_slos (id, name, objective, target) VALUES (51, 'cache a', 'availability', 99)`); err != nil {
			t.Fatal(err)
		}
		cached := ttl > 0
		if got, want := count(), n0+map[bool]int{true: 0, false: 1}[cached]; got != want {
			t.Errorf("ttl %v: %d SLOs right after an insert elsewhere, want %d", ttl, got, want)
		}
		mu.Lock()
		clock = clock.Add(ttl + time.Second)
		mu.Unlock()
		if got := count(); got != n0+1 {
			t.Errorf("ttl %v: %d SLOs after the TTL, want %d", ttl, got, n0+1)
		}
		if got := status(52); got != 404 {
			t.Fatalf("ttl %v: GET /slos/52 before it exists: %d", ttl, got)
		}
		// A write through this API is visible at once, in the list and by id.
		resp, body := f.request("POST", "/slos", `{"name":"cache b","objective":"availability","target":99.5}`, bearer(adminKey))
		if resp.StatusCode != 201 {
			t.Fatalf("POST /slos: %d %s", resp.StatusCode, body)
		}
		var d struct{ ID int }
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != n0+2 {
			t.Errorf("ttl %v: %d SLOs right after POST /slos, want %d", ttl, got, n0+2)
		}
		if got := status(d.ID); got != 200 {
			t.Errorf("ttl %v: GET /slos/%d right after its POST: %d", ttl, d.ID, got)
		}
		resp, body = f.request("DELETE", fmt.Sprintf("/slos/%d", d.ID), "", bearer(adminKey))
		if resp.StatusCode != 204 {
			t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
		}
		if got := status(d.ID); got != 404 {
			t.Errorf("ttl %v: GET /slos/%d right after its DELETE: %d", ttl, d.ID, got)
		}
	}
}
