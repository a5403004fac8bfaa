package dashboard_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/schema"
)

// sloTraffic is the per-minute traffic of the SLO test, exactly known:
//
//	checkout  1000 events a minute, 1 error (0.1 %); 100 errors (10 %) in
//	          the last hour before now; 200 errors (20 %) in an incident of
//	          3 hours 10 days before now
//	search    500 events a minute, no errors, 498 of them <= 300 ms (0.4 % slow)
func sloTraffic(now time.Time, service string, m time.Time) (count, errs, fast int64) {
	switch service {
	case "checkout":
		count, errs = 1000, 1
		switch {
		case !m.Before(now.Add(-time.Hour)):
			errs = 100
		case !m.Before(now.Add(-240*time.Hour)) && m.Before(now.Add(-237*time.Hour)):
			errs = 200
		}
		return count, errs, 0
	case "search":
		return 500, 0, 498
	}
	return 0, 0, 0
}

// seedSLOTraffic writes sloTraffic into the metrics tables as the
// projections fold it: hourly buckets for 40 days, 5-minute buckets for 6
// hours and 1-minute buckets for 3 hours before now, each the sum of its
// minutes; search's rows count the 300 ms threshold (latency_good).
func seedSLOTraffic(t *testing.T, db *pgx.Conn, now time.Time) {
	t.Helper()
	cols := []string{"service", "timestamp", "count", "error_count", "error_rate", "throughput_per_sec", "latency_good", "final", "updated_at"}
	for _, tb := range []struct {
		name string
		size time.Duration
		span time.Duration
	}{{"1min", time.Minute, 3 * time.Hour}, {"5min", 5 * time.Minute, 6 * time.Hour}, {"1hour", time.Hour, 40 * 24 * time.Hour}} {
		var rows [][]any
		for _, svc := range []string{"checkout", "search"} {
			for b := now.Add(-tb.span); b.Before(now); b = b.Add(tb.size) {
				var count, errs, fast int64
				for m := b; m.Before(b.Add(tb.size)); m = m.Add(time.Minute) {
					c, e, f := sloTraffic(now, svc, m)
					count, errs, fast = count+c, errs+e, fast+f
				}
				lg := "{}"
				if svc == "search" {
					lg = fmt.Sprintf(`{"300": %d}`, fast)
				}
				rows = append(rows, []any{svc, b, count, errs, 100 * float64(errs) / float64(count),
					float64(count) / tb.size.Seconds(), lg, true, b.Add(tb.size)})
			}
		}
		if _, err := db.CopyFrom(context.Background(), pgx.Identifier{"analytics_metrics_" + tb.name}, cols, pgx.CopyFromRows(rows)); err != nil {
			t.Fatalf("seed %s: %v", tb.name, err)
		}
	}
}

// sloSum is the traffic of service ("" = all) in [now-d, now): total and
// bad events (errors for availability, events over 300 ms for latency).
func sloSum(now time.Time, service, objective string, d time.Duration) (total, bad int64) {
	for _, svc := range []string{"checkout", "search"} {
		if service != "" && svc != service {
			continue
		}
		for m := now.Add(-d); m.Before(now); m = m.Add(time.Minute) {
			c, e, f := sloTraffic(now, svc, m)
			total += c
			if objective == "latency" {
				bad += c - f
			} else {
				bad += e
			}
		}
	}
	return total, bad
}

// sloEventSpan is how much event time before now each window covers when
// now is an hour boundary: a rolling window of d is read from the coarsest
// table dividing it into at least 5 buckets, its newest bucket being the
// one holding now — empty at a boundary — so it covers d minus one bucket
// (docs/dashboard.md, "SLOs"; the API's internal/slo/windows.go).
var sloEventSpan = map[string]time.Duration{
	"5m":  4 * time.Minute,  // 1min buckets
	"30m": 25 * time.Minute, // 5min
	"1h":  55 * time.Minute, // 5min
	"2h":  115 * time.Minute,
	"6h":  5 * time.Hour, // 1hour
	"1d":  23 * time.Hour,
	"3d":  71 * time.Hour,
	"7d":  167 * time.Hour,
	"30d": 719 * time.Hour,
}

// sloShown is what the page shows for one SLO: the data-value attributes
// and texts of its card.
type sloShown struct {
	ID             string              `json:"id"`
	Name           string              `json:"name"`
	State          string              `json:"state"`
	StateText      string              `json:"state_text"`
	Def            string              `json:"def"`
	Compliance     string              `json:"compliance"`
	ComplianceText string              `json:"compliance_text"`
	Counts         string              `json:"counts"`
	Budget         string              `json:"budget"`
	BudgetText     string              `json:"budget_text"`
	BudgetEvents   string              `json:"budget_events"`
	BudgetEvText   string              `json:"budget_events_text"`
	BarNow         string              `json:"bar_now"`
	BarExhausted   bool                `json:"bar_exhausted"`
	TTE            string              `json:"tte"`
	TTEText        string              `json:"tte_text"`
	Burn           map[string]string   `json:"burn"`
	BurnText       map[string]string   `json:"burn_text"`
	Hot            map[string]string   `json:"hot"`
	Windows        []string            `json:"windows"`
	Alerts         []map[string]string `json:"alerts"`
	NoAlerts       bool                `json:"no_alerts"`
	ChartPoints    string              `json:"chart_points"`
	ChartDesc      string              `json:"chart_desc"`
	Flags          string              `json:"flags"`
	ChartYs        []float64           `json:"chart_ys"`
	ChartHeight    float64             `json:"chart_height"`
}

const readSLOsJS = `[...document.querySelectorAll('[data-testid=slo-card]')].map(c => {
  const q = (id) => c.querySelector('[data-testid=' + id + ']');
  const burn = {}, text = {}, hot = {};
  const cells = [...c.querySelectorAll('[data-testid=slo-burn]')];
  for (const td of cells) { burn[td.dataset.window] = td.dataset.value; text[td.dataset.window] = td.textContent; hot[td.dataset.window] = td.dataset.hot; }
  return {id: c.dataset.sloId, name: q('slo-name').textContent, state: c.dataset.state, state_text: q('slo-state').textContent,
    def: q('slo-def').textContent, compliance: q('slo-compliance').dataset.value, compliance_text: q('slo-compliance').textContent,
    counts: q('slo-counts').textContent, budget: q('slo-budget').dataset.value, budget_text: q('slo-budget').textContent,
    budget_events: q('slo-budget-events').dataset.value, budget_events_text: q('slo-budget-events').textContent,
    bar_now: q('slo-budget-bar').getAttribute('aria-valuenow'), bar_exhausted: q('slo-budget-bar').classList.contains('exhausted'),
    tte: q('slo-tte').dataset.value, tte_text: q('slo-tte').textContent, burn, burn_text: text, hot,
    windows: cells.map(td => td.dataset.window),
    alerts: [...c.querySelectorAll('[data-testid=slo-alert]')].map(li => ({id: li.dataset.alertId, severity: li.dataset.severity, text: li.textContent})),
    no_alerts: !c.querySelector('.hint').hidden,
    chart_points: q('slo-chart').dataset.points || '', chart_desc: c.querySelector('[data-testid=slo-chart] desc').textContent,
    flags: c.querySelector('.slo-flags').textContent,
    chart_ys: [...c.querySelectorAll('[data-testid=slo-chart] path.line')].filter(p => p.getAttribute('visibility') === 'visible')
      .flatMap(p => [...p.getAttribute('d').matchAll(/[ML][-\d.]+,([-\d.]+)/g)].map(m => Number(m[1]))),
    chart_height: c.querySelector('[data-testid=slo-chart] svg').clientHeight};
})`

// sloStatus is the part of GET /slos the test compares.
type sloStatus struct {
	ID          int64    `json:"id"`
	Name        string   `json:"name"`
	TotalEvents int64    `json:"total_events"`
	BadEvents   int64    `json:"bad_events"`
	Compliance  *float64 `json:"compliance"`
	ErrorBudget struct {
		TotalEvents     float64  `json:"total_events"`
		RemainingEvents float64  `json:"remaining_events"`
		RemainingRatio  *float64 `json:"remaining_ratio"`
	} `json:"error_budget"`
	BurnRates    map[string]*float64 `json:"burn_rates"`
	TTE          *float64            `json:"time_to_exhaustion_seconds"`
	FiringAlerts []struct {
		ID int64 `json:"id"`
	} `json:"firing_alerts"`
}

func numStr(v *float64) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(*v) // what JavaScript's String(number) writes for these values
}

// near: a float the test computed by hand equals the API's up to the order
// of floating-point operations.
func near(got string, want float64) bool {
	var g float64
	if _, err := fmt.Sscan(got, &g); err != nil {
		return false
	}
	return math.Abs(g-want) <= 1e-9*math.Max(1, math.Abs(want))
}

// TestSLOsInBrowser opens the dashboard against a real API whose clock
// stands at an hour boundary, on a PostgreSQL holding SLOs and metrics of
// exactly known counts, and checks the SLOs panel: the empty state before
// any SLO exists; then, refreshed in place, per SLO the exact compliance,
// error budget left (ratio, events, bar; exhausted in red), burn rates per
// window with those at a policy threshold highlighted, time to exhaustion,
// the firing burn-rate alert (not the resolved one) and a burn-down chart
// with a point per history point; an API error shown in the panel with the
// last data kept; a reader signing in to an API with credentials; and the
// cards going when their SLOs are deleted.
func TestSLOsInBrowser(t *testing.T) {
	start := time.Now()
	pg := testenv.Postgres(t)
	dbctx := context.Background()
	db, err := pgx.Connect(dbctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	if _, err := schema.Up(dbctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Hour)
	t.Logf("database (%s) ready after %v", pg.Source, time.Since(start).Round(time.Millisecond))
	seedSLOTraffic(t, db, now)
	t.Logf("seeded after %v", time.Since(start).Round(time.Millisecond))
	// The browser's 90 s budget starts after the database, which takes
	// tens of seconds on a loaded machine.
	ctx, cons, ready, stopBrowser := browser(t)
	clock := api.Deps{Now: func() time.Time { return now }}
	anon := serveWith(t, apiConfig(pg.DSN, false), clock)
	secured := serveWith(t, apiConfig(pg.DSN, true), clock)
	t.Cleanup(stopBrowser)
	ready()

	// No SLOs yet: the empty state.
	if err := chromedp.Do(ctx, chromedp.Navigate(anon+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the empty SLO list", `document.querySelector('#slo-list[data-count="0"]') && !document.getElementById('slos-empty').hidden &&
		document.getElementById('slos-error').hidden`)
	if txt, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('slos-empty').textContent`)); !strings.HasPrefix(txt, "No SLOs defined.") {
		t.Errorf("empty state %q", txt)
	}

	// SLOs appear at the next refresh, without a reload.
	t.Logf("empty state shown after %v", time.Since(start).Round(time.Millisecond))
	if _, err := db.Exec(dbctx, `
INSERT INTO analytics_slos (id, name, service, objective, latency_threshold_ms, target, period, enabled) VALUES
  (1, 'checkout availability', 'checkout', 'availability', NULL, 99.5, '30 days', true),
  (2, 'search fast', 'search', 'latency', 300, 99.9, '7 days', true),
  (3, 'everything available', NULL, 'availability', NULL, 99, '1 day', true),
  (4, 'payments availability', 'payments', 'availability', NULL, 99.9, '30 days', false)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(dbctx, `
INSERT INTO analytics_alerts (alert_id, fingerprint, rule_id, rule_name, service, severity, status, metric_name, value, threshold,
  message, fired_at, resolved_at, slo_id, slo_burn_alert) VALUES
  ('slo-1-page-1h-5m', 'slo:1:page:1h:5m', NULL, 'checkout availability', 'checkout', 'critical', 'active', 'slo_burn_rate', 20, 14.4,
   'checkout availability: burning 20x over 1h and 5m', $1, NULL, 1, '{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}'),
  ('slo-1-ticket-1d-2h', 'slo:1:ticket:1d:2h', NULL, 'checkout availability', 'checkout', 'warning', 'resolved', 'slo_burn_rate', 3.2, 3,
   'checkout availability: burning 3.2x over 1d and 2h', $2, $3, 1, '{"severity":"ticket","burn_rate":3,"long":"1d","short":"2h"}')`,
		now.Add(-50*time.Minute), now.Add(-239*time.Hour), now.Add(-236*time.Hour)); err != nil {
		t.Fatal(err)
	}
	refreshNow(t, ctx)
	poll(t, ctx, "four SLO cards with their charts", `document.querySelector('#slo-list[data-count="4"]') && document.getElementById('slos-empty').hidden &&
		document.querySelectorAll('[data-testid=slo-chart][data-points]').length === 4`)

	var list struct {
		SLOs []sloStatus `json:"slos"`
	}
	getJSON(t, anon+"/slos", "", &list)
	cards, err := chromedp.Run(ctx, chromedp.Evaluate[[]sloShown](readSLOsJS))
	if err != nil {
		t.Fatal(err)
	}
	if len(cards) != 4 || len(list.SLOs) != 4 {
		t.Fatalf("cards %+v, /slos %+v", cards, list.SLOs)
	}

	// Every figure is the API's, to the last digit.
	for i, c := range cards {
		s := list.SLOs[i]
		if c.ID != fmt.Sprint(s.ID) || c.Name != s.Name || c.Compliance != numStr(s.Compliance) || c.Budget != numStr(s.ErrorBudget.RemainingRatio) ||
			c.TTE != numStr(s.TTE) || len(c.Alerts) != len(s.FiringAlerts) {
			t.Errorf("card %+v, /slos %+v", c, s)
		}
		for w, v := range s.BurnRates {
			if got, shown := c.Burn[w]; shown && got != numStr(v) {
				t.Errorf("%s burn %s: page %q, /slos %v", s.Name, w, got, numStr(v))
			}
		}
		var hist struct {
			Points []struct {
				BudgetRemainingRatio *float64 `json:"budget_remaining_ratio"`
			} `json:"points"`
		}
		getJSON(t, fmt.Sprintf("%s/slos/%d/history", anon, s.ID), "", &hist)
		n := 0
		for _, p := range hist.Points {
			if p.BudgetRemainingRatio != nil {
				n++
			}
		}
		if c.ChartPoints != fmt.Sprint(n) || len(c.ChartYs) != n {
			t.Errorf("%s: chart has %s points (%d drawn), history %d", s.Name, c.ChartPoints, len(c.ChartYs), n)
		}
		// inside the plot area (8 px margin on top, 22 px for the time
		// axis), an overspent budget's negative values too
		for _, y := range c.ChartYs {
			if y < 8-0.05 || y > c.ChartHeight-22+0.05 {
				t.Errorf("%s: chart point at y %v outside the plot (height %v)", s.Name, y, c.ChartHeight)
				break
			}
		}
	}

	// And the figures are the traffic's, computed by hand.
	checks := []struct {
		card      int
		service   string
		objective string
		period    string
		target    float64
		state     string
		def       string
		hot       map[string]string
		tteText   string
	}{
		// 10 % errors in the last hour: 20x the 0.5 % budget rate
		{0, "checkout", "availability", "30d", 99.5, "ok", "checkout · availability · target 99.5 % · period 30d",
			map[string]string{"5m": "page", "30m": "page", "1h": "page", "2h": "ticket", "6h": "ticket"}, "21 h 48 min"},
		// 0.4 % slow all along: 4x the 0.1 % budget rate, spent long ago
		{1, "search", "latency", "7d", 99.9, "exhausted", "search · latency ≤ 300 ms · target 99.9 % · period 7d",
			map[string]string{"2h": "ticket", "6h": "ticket", "1d": "ticket", "3d": "ticket"}, "exhausted"},
		// both services against 1 %
		{2, "", "availability", "1d", 99, "ok", "all services · availability · target 99 % · period 1d",
			map[string]string{"30m": "page", "2h": "ticket", "6h": "ticket"}, "2 h 13 min"},
		// no traffic, disabled
		{3, "payments", "availability", "30d", 99.9, "nodata", "payments · availability · target 99.9 % · period 30d",
			map[string]string{}, "–"},
	}
	for _, w := range checks {
		c := cards[w.card]
		total, bad := sloSum(now, w.service, w.objective, sloEventSpan[w.period])
		frac := 1 - w.target/100
		if c.State != w.state || c.Def != w.def || c.TTEText != w.tteText {
			t.Errorf("%s: state %q def %q time to exhaustion %q; want %q, %q, %q", c.Name, c.State, c.Def, c.TTEText, w.state, w.def, w.tteText)
		}
		if strings.Join(c.Windows[:6], ",") != "5m,30m,1h,6h,1d,3d" {
			t.Errorf("%s: burn windows %v", c.Name, c.Windows)
		}
		for _, win := range c.Windows {
			if c.Hot[win] != w.hot[win] {
				t.Errorf("%s: window %s highlighted %q, want %q (rate %s)", c.Name, win, c.Hot[win], w.hot[win], c.Burn[win])
			}
			if w.hot[win] != "" && !strings.HasSuffix(c.BurnText[win], "▲") {
				t.Errorf("%s: highlighted %s burn rate %q has no marker", c.Name, win, c.BurnText[win])
			}
		}
		if total == 0 {
			if c.Compliance != "" || c.Budget != "" || c.TTE != "" || c.Burn["1h"] != "" || c.ComplianceText != "–" || c.StateText != "no data" {
				t.Errorf("%s: no traffic but %+v", c.Name, c)
			}
			continue
		}
		budget := frac * float64(total)
		if !near(c.Compliance, 100*float64(total-bad)/float64(total)) || !near(c.Budget, (budget-float64(bad))/budget) ||
			!near(c.BudgetEvents, budget-float64(bad)) {
			t.Errorf("%s: compliance %s, budget %s (%s events); want %v, %v, %v", c.Name, c.Compliance, c.Budget, c.BudgetEvents,
				100*float64(total-bad)/float64(total), (budget-float64(bad))/budget, budget-float64(bad))
		}
		for win, span := range sloEventSpan {
			if _, shown := c.Burn[win]; !shown {
				continue
			}
			wt, wb := sloSum(now, w.service, w.objective, span)
			if !near(c.Burn[win], float64(wb)/float64(wt)/frac) {
				t.Errorf("%s: burn rate %s = %s, want %v", c.Name, win, c.Burn[win], float64(wb)/float64(wt)/frac)
			}
		}
		exhausted := w.state == "exhausted"
		if c.BarExhausted != exhausted || (exhausted && (c.BarNow != "0" || !strings.HasPrefix(c.BudgetText, "exhausted"))) {
			t.Errorf("%s: budget bar %q exhausted %v, text %q", c.Name, c.BarNow, c.BarExhausted, c.BudgetText)
		}
	}
	// The texts, in the browser's locale (en-US).
	c := cards[0]
	if c.ComplianceText != "99.803 %" || c.BudgetText != "60.6 %" || c.BarNow != "60.6" ||
		c.BudgetEvText != "130,800 of 215,700 bad events left" || c.Counts != "43,055,100 good of 43,140,000 events" ||
		c.BurnText["5m"] != "20.0× ▲" || c.BurnText["3d"] != "0.48×" || c.StateText != "meeting target ●" || c.Flags != "1 firing" {
		t.Errorf("checkout texts %+v", c)
	}
	if len(c.Alerts) != 1 || c.Alerts[0]["severity"] != "page" || !strings.Contains(c.Alerts[0]["text"], "14.4× over 1h and 5m · since") || c.NoAlerts {
		t.Errorf("checkout firing alerts %+v (no-alerts note %v)", c.Alerts, c.NoAlerts)
	}
	// The newest history point is the 720 complete hours before now (the
	// status's period also counts the current, empty, hour: 719 with data):
	// 131,040 of 216,000 events left.
	if !strings.Contains(c.ChartDesc, "budget left 60.7 %") {
		t.Errorf("checkout chart description %q", c.ChartDesc)
	}
	if c := cards[1]; c.BudgetText != "exhausted (-300.0 %)" || c.BudgetEvText != "15,030 bad events over a budget of 5,010" ||
		c.StateText != "budget exhausted ✕" || len(c.Alerts) != 0 || !c.NoAlerts {
		t.Errorf("search texts %+v", c)
	}
	if c := cards[3]; c.Flags != "disabled" || c.TTEText != "–" || c.ChartDesc != "No data in this range" {
		t.Errorf("payments %+v", c)
	}
	screenshot(t, ctx, "dashboard-slos.png")
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "dashboard-slos-dark.png")
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
		t.Fatal(err)
	}
	// The panel alone, without the sticky header over it.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector('header.top').style.position = 'static'`)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`section.slos`)))
	if err != nil {
		t.Fatal(err)
	}
	writeArtifact(t, "dashboard-slos-panel.png", png)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector('header.top').style.position = ''`)); err != nil {
		t.Fatal(err)
	}
	if p := cons.problems(nil); len(p) > 0 {
		t.Errorf("console:\n%s", strings.Join(p, "\n"))
	}

	// The API fails: the panel says so and keeps the last data.
	cons.reset()
	if _, err := db.Exec(dbctx, `REVOKE SELECT ON analytics_slos FROM stacklens_reader`); err != nil {
		t.Fatal(err)
	}
	refreshNow(t, ctx)
	poll(t, ctx, "the SLO error", `!document.getElementById('slos-error').hidden && document.querySelector('#slo-list[data-count="4"]')`)
	msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('slos-error').textContent`))
	if !strings.HasPrefix(msg, "Could not load: ") || !strings.Contains(msg, "(HTTP 5") || !strings.HasSuffix(msg, "Showing the last data received.") {
		t.Errorf("SLO error %q", msg)
	}
	if v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-slo-id="1"] [data-testid=slo-compliance]').dataset.value`)); v != cards[0].Compliance {
		t.Errorf("compliance after the error %q, want the last %q", v, cards[0].Compliance)
	}
	if _, err := db.Exec(dbctx, `GRANT SELECT ON analytics_slos TO stacklens_reader`); err != nil {
		t.Fatal(err)
	}
	refreshNow(t, ctx)
	poll(t, ctx, "the SLO error gone", `document.getElementById('slos-error').hidden`)
	if p := cons.problems(func(m chromedp.ConsoleMessage) bool {
		return m.Source == "network" && strings.Contains(m.URL, "/slos") && strings.Contains(m.Text, "status of 5")
	}); len(p) > 0 {
		t.Errorf("console:\n%s", strings.Join(p, "\n"))
	}

	// With credentials: the sign-in form first, the SLOs after a reader key.
	if err := chromedp.Do(ctx, chromedp.Navigate(secured+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the sign-in form", `!document.getElementById('login').hidden && document.getElementById('main').hidden`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`[data-testid=apikey]`), readerKey+"\r")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the SLOs after sign-in", `document.querySelector('#slo-list[data-count="4"]') && document.querySelectorAll('[data-testid=slo-chart][data-points]').length === 4`)
	if v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-slo-id="1"] [data-testid=slo-compliance]').dataset.value`)); v != cards[0].Compliance {
		t.Errorf("compliance signed in %q, want %q", v, cards[0].Compliance)
	}

	// Deleted SLOs leave the page: the empty state again.
	if _, err := db.Exec(dbctx, `DELETE FROM analytics_slos`); err != nil {
		t.Fatal(err)
	}
	refreshNow(t, ctx)
	poll(t, ctx, "the empty state again", `document.querySelector('#slo-list[data-count="0"]') && !document.getElementById('slos-empty').hidden &&
		!document.querySelector('[data-testid=slo-card]')`)
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// refreshNow refreshes the page's data as a user can: Pause, then Resume
// (which refreshes at once), instead of waiting up to 5 s for the next
// automatic refresh.
func refreshNow(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#pause`)), chromedp.Click(chromedp.CSS(`#pause`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the resumed refresh", `document.getElementById('pause').getAttribute('aria-pressed') === 'false'`)
}

// writeArtifact writes a screenshot next to the others.
func writeArtifact(t *testing.T, name string, png []byte) {
	t.Helper()
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d KB)", p, len(png)/1024)
}
