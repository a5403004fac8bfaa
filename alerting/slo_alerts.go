package alerting

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/slo"
)

// MetricBurnRate is the metric of SLO burn-rate alerts (docs/slo.md).
const MetricBurnRate = "burn_rate"

// sloAllServices is the service of an alert of an SLO over every service.
const sloAllServices = "*"

// sloInterval is how often SLOs are evaluated: burn rates move with the
// one-minute buckets of the metrics tables, so evaluating them every
// ALERT_EVAL_INTERVAL (500 ms) would only add queries to every cycle.
const sloInterval = 5 * time.Second

// SLOFingerprint identifies one entry of an SLO's burn-rate policy: the
// Kafka key and PagerDuty dedup_key of its alerts. It is derived from the
// SLO's id and the entry, so renaming the SLO keeps its open alerts and
// changing an entry makes it another alert.
func SLOFingerprint(sloID int64, a slo.BurnAlert) string {
	h := sha256.Sum256([]byte("stacklens-slo\x00" + strconv.FormatInt(sloID, 10) + "\x00" + a.Severity + "\x00" +
		strconv.FormatFloat(a.BurnRate, 'g', -1, 64) + "\x00" + slo.FormatDuration(time.Duration(a.Long)) + "\x00" +
		slo.FormatDuration(time.Duration(a.Short))))
	return hex.EncodeToString(h[:16])
}

// SLOSeverity is the alert severity of a policy severity: a page is
// critical, a ticket a warning.
func SLOSeverity(policy string) string {
	if policy == slo.Page {
		return "critical"
	}
	return "warning"
}

// sloChange is one burn-rate alert transition found by a cycle.
type sloChange struct {
	def   *slo.Definition
	entry slo.BurnAlert
	fp    string
	fire  bool
	// long and short are the burn rates of the entry's windows.
	long, short *float64
	// alertID of the alert to resolve, and why.
	alertID, reason string
}

// openSLOAlert is an active or acknowledged burn-rate alert.
type openSLOAlert struct {
	alertID, fp string
	sloID       *int64
}

// evaluateSLOs computes the burn rates of every enabled SLO's policy
// windows at now (from the metrics tables, the current partial bucket
// included: internal/slo) and returns the transitions: an entry whose
// long and short burn rates both reach its burn rate fires unless its
// alert is open; an open alert whose entry no longer burns — or whose
// SLO was deleted, disabled, made invalid or lost the entry — resolves.
// The open alert rows are the state: nothing else is kept between cycles.
func (e *Engine) evaluateSLOs(ctx context.Context, now time.Time) ([]sloChange, error) {
	all, invalid, err := slo.LoadDefinitions(ctx, e.pool, nil, true)
	if err != nil {
		return nil, err
	}
	var defs []slo.Definition
	bad := 0
	for i := range all {
		if invalid[i] != "" {
			bad++
			if e.sloInvalid[all[i].ID] != invalid[i] {
				e.log.Warn("SLO cannot be evaluated; its burn-rate alerts are off", "slo", all[i].Name, "id", all[i].ID, "err", invalid[i])
			}
			continue
		}
		defs = append(defs, all[i])
	}
	invalidSLOsGauge.Set(float64(bad))
	e.sloInvalid = map[int64]string{}
	for i := range all {
		if invalid[i] != "" {
			e.sloInvalid[all[i].ID] = invalid[i]
		}
	}
	evs, err := slo.Evaluate(ctx, e.pool, defs, now, e.cfg.Windows, false)
	if err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT alert_id, fingerprint, slo_id FROM analytics_alerts
WHERE slo_burn_alert IS NOT NULL AND status IN ('active', 'acknowledged') ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("open slo alerts: %w", err)
	}
	open, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (openSLOAlert, error) {
		var o openSLOAlert
		return o, r.Scan(&o.alertID, &o.fp, &o.sloID)
	})
	if err != nil {
		return nil, fmt.Errorf("open slo alerts: %w", err)
	}
	byFP := map[string]openSLOAlert{}
	for _, o := range open {
		byFP[o.fp] = o
	}
	var out []sloChange
	seen := map[string]bool{}
	for i := range defs {
		d := &defs[i]
		for _, a := range d.Policy() {
			fp := SLOFingerprint(d.ID, a)
			seen[fp] = true
			long := slo.BurnRate(evs[i].Burn[time.Duration(a.Long)], d.Target)
			short := slo.BurnRate(evs[i].Burn[time.Duration(a.Short)], d.Target)
			sloEvaluationsTotal.Inc()
			burning := slo.Burning(long, a.BurnRate) && slo.Burning(short, a.BurnRate)
			o, isOpen := byFP[fp]
			switch {
			case burning && !isOpen:
				out = append(out, sloChange{def: d, entry: a, fp: fp, fire: true, long: long, short: short})
			case !burning && isOpen:
				out = append(out, sloChange{def: d, entry: a, fp: fp, long: long, short: short, alertID: o.alertID,
					reason: fmt.Sprintf("burn rate %s over %s, %s over %s: below %gx", fmtRate(long), slo.FormatDuration(time.Duration(a.Long)),
						fmtRate(short), slo.FormatDuration(time.Duration(a.Short)), a.BurnRate)})
			}
		}
	}
	for _, o := range open {
		if seen[o.fp] {
			continue
		}
		why := "SLO deleted"
		if o.sloID != nil {
			why = "SLO disabled, invalid or its burn-rate policy changed"
		}
		out = append(out, sloChange{fp: o.fp, alertID: o.alertID, reason: why})
	}
	return out, nil
}

func fmtRate(r *float64) string {
	if r == nil {
		return "none (no events)"
	}
	return fmtValue(*r) + "x"
}

// sloChannels are the outbox channels of a firing alert of d: Kafka
// always, plus the SLO's channels that are configured.
func (e *Engine) sloChannels(d *slo.Definition) []string {
	var out []string
	for _, c := range channelsAll {
		if (c == "kafka" || slices.Contains(d.NotificationChannels, c)) && e.senders[c] != nil {
			out = append(out, c)
		}
	}
	return out
}

// commitSLO writes one burn-rate transition and its outbox rows in tx; it
// returns the number of outbox rows enqueued.
func (e *Engine) commitSLO(ctx context.Context, tx pgx.Tx, now time.Time, c sloChange, sils []Silence) (int, error) {
	if !c.fire {
		ev, n, err := resolve(ctx, tx, nil, c.alertID, minRate(c.long, c.short), nil, now, c.reason)
		if err == nil && ev != nil {
			alertsCounter(stateResolved, ev.Severity).Inc()
		}
		return n, err
	}
	d, a := c.def, c.entry
	service := sloAllServices
	if d.Service != nil {
		service = *d.Service
	}
	sev := SLOSeverity(a.Severity)
	id, entry := d.ID, a
	thr := a.BurnRate
	long, short := slo.FormatDuration(time.Duration(a.Long)), slo.FormatDuration(time.Duration(a.Short))
	ev := &Event{
		AlertID: AlertID(c.fp, now), Fingerprint: c.fp, State: stateFiring, Rule: d.Name, Service: service,
		Severity: sev, Metric: MetricBurnRate, Operator: ">=", Value: minRate(c.long, c.short), Threshold: &thr,
		Window: long, FiredAt: now,
		Message: fmt.Sprintf("%s: error budget burning at %s over %s and %s over %s (%s: >= %gx over both; target %g%% over %s)",
			d.Name, fmtRate(c.long), long, fmtRate(c.short), short, a.Severity, a.BurnRate, d.Target, slo.FormatDuration(d.Period)),
		Description: d.Description, EmittedAt: now, SLOID: &id, SLOBurnAlert: &entry,
	}
	channels := e.sloChannels(d)
	if silenced(sils, &Rule{Name: d.Name, Severity: sev}, service, now) {
		channels = nil
		ev.Message += " [silenced: not notified]"
		silencedTotal.Inc()
	}
	_, inserted, n, err := fire(ctx, tx, ev, channels)
	if err == nil && inserted {
		alertsCounter(stateFiring, sev).Inc()
	}
	return n, err
}

func minRate(a, b *float64) *float64 {
	if a == nil || b == nil {
		return nil
	}
	v := min(*a, *b)
	return &v
}

// burnAlertJSON is the slo_burn_alert column of ev: NULL for rule alerts.
func burnAlertJSON(ev *Event) ([]byte, error) {
	if ev.SLOBurnAlert == nil {
		return nil, nil
	}
	return json.Marshal(ev.SLOBurnAlert)
}
