package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/slo"
)

// SLODefinition is one service-level objective as stored (analytics_slos;
// docs/api.md, "SLOs").
type SLODefinition struct {
	ID                   int64              `json:"id"`
	Name                 string             `json:"name"`
	Service              *string            `json:"service" doc:"null: every service together"`
	Objective            string             `json:"objective" enum:"availability,latency"`
	LatencyThresholdMS   *float64           `json:"latency_threshold_ms" doc:"latency objectives: good events have latency_ms <= it; null otherwise"`
	Target               float64            `json:"target" doc:"percent of good events, 0 < target < 100"`
	Period               string             `json:"period" doc:"rolling period, in its largest whole unit: 30d, 36h, 90m"`
	BurnAlerts           *[]BurnAlertPolicy `json:"burn_alerts" doc:"null: the default multiwindow policy (docs/slo.md)"`
	NotificationChannels []string           `json:"notification_channels"`
	Enabled              bool               `json:"enabled"`
	Description          string             `json:"description"`
	CreatedAt            time.Time          `json:"created_at"`
	UpdatedAt            time.Time          `json:"updated_at"`
}

// BurnAlertPolicy is one multiwindow burn-rate alert of an SLO: it fires
// when the burn rate over both long and short is at least BurnRate.
type BurnAlertPolicy struct {
	Severity string  `json:"severity" enum:"page,ticket"`
	BurnRate float64 `json:"burn_rate" doc:"multiple of the error budget's even spend, > 0"`
	Long     string  `json:"long" doc:"long window: a whole number of m, h, d or w (1h, 3d)"`
	Short    string  `json:"short" doc:"short window, shorter than long"`
}

// SLOInput is the body of POST /slos and PUT /slos/{id} (PUT replaces the
// whole definition; omitted optional fields take their defaults), and the
// shape of each entry of SLO_FILE.
type SLOInput struct {
	Name                 string             `json:"name" required:"true" doc:"unique, 1-200 characters"`
	Service              *string            `json:"service,omitempty" doc:"a service name; omitted: every service together"`
	Objective            string             `json:"objective" required:"true" enum:"availability,latency" doc:"availability: good = events not at level error, critical or fatal; latency: good = events with latency_ms <= latency_threshold_ms"`
	LatencyThresholdMS   *float64           `json:"latency_threshold_ms,omitempty" doc:"required for latency objectives (0 to 1e15 ms), refused otherwise"`
	Target               *float64           `json:"target" required:"true" doc:"percent of good events, 0 < target < 100 (99.9)"`
	Period               string             `json:"period,omitempty" doc:"rolling period: a whole number of m, h, d or w (7d, 28d, 30d, 36h, 4w), 1h to 366d; default 30d"`
	BurnAlerts           *[]BurnAlertPolicy `json:"burn_alerts,omitempty" doc:"at most 16; omitted: the default policy (docs/slo.md); []: no burn-rate alerts"`
	NotificationChannels []string           `json:"notification_channels,omitempty" doc:"subset of slack, email, pagerduty; default none"`
	Enabled              *bool              `json:"enabled,omitempty" doc:"default true"`
	Description          string             `json:"description,omitempty" doc:"at most 1000 characters"`
}

const (
	maxBurnAlerts  = 16
	defaultSLOSpan = "30d"
)

// validateSLO checks an SLO body and fills in defaults; the period is
// returned as a duration, every duration is rewritten in canonical form.
// Durations, policy and the cross-field rules are internal/slo's, the ones
// the status reader and the alert engine apply to stored definitions, so
// nothing accepted here is later skipped as invalid.
func validateSLO(in *SLOInput, channels []string) (time.Duration, error) {
	in.Name = strings.TrimSpace(in.Name)
	if err := validName(in.Name, 200); err != nil {
		return 0, badParam("name", "%s", err)
	}
	if in.Service != nil {
		if err := event.ValidService(*in.Service); err != nil {
			return 0, badParam("service", "%s", err)
		}
	}
	if in.Objective != slo.Availability && in.Objective != slo.Latency {
		return 0, badParam("objective", "want availability or latency")
	}
	switch lt := in.LatencyThresholdMS; {
	case in.Objective == slo.Latency && lt == nil:
		return 0, badParam("latency_threshold_ms", "required for a latency objective")
	case in.Objective != slo.Latency && lt != nil:
		return 0, badParam("latency_threshold_ms", "only a latency objective takes a threshold")
	case lt != nil && !(*lt >= 0 && *lt <= agg.MaxLatencyMS):
		return 0, badParam("latency_threshold_ms", "want a number of milliseconds from 0 to %v", agg.MaxLatencyMS)
	case lt != nil:
		*lt += 0 // -0 is 0
	}
	if in.Target == nil || !(*in.Target > 0 && *in.Target < 100) {
		return 0, badParam("target", "want a percentage strictly between 0 and 100 (99.9)")
	}
	if in.Period == "" {
		in.Period = defaultSLOSpan
	}
	period, err := slo.ParseDuration(in.Period)
	if err != nil {
		return 0, badParam("period", "%s", err)
	}
	if period < slo.MinPeriod || period > slo.MaxPeriod {
		return 0, badParam("period", "want 1h to 366d, got %s", in.Period)
	}
	in.Period = slo.FormatDuration(period)
	var policy []slo.BurnAlert
	if in.BurnAlerts != nil {
		if policy, err = parseBurnAlerts(*in.BurnAlerts); err != nil {
			return 0, err
		}
	}
	if in.NotificationChannels == nil {
		in.NotificationChannels = []string{}
	}
	seen := map[string]bool{}
	for _, ch := range in.NotificationChannels {
		if !slices.Contains(channels, ch) {
			return 0, badParam("notification_channels", "%q: want slack, email or pagerduty", truncate(ch, 64))
		}
		if seen[ch] {
			return 0, badParam("notification_channels", "%q listed twice", ch)
		}
		seen[ch] = true
	}
	if in.Enabled == nil {
		t := true
		in.Enabled = &t
	}
	if len(in.Description) > 1000 {
		return 0, badParam("description", "longer than 1000 bytes")
	}
	d := slo.Definition{Name: in.Name, Service: in.Service, Objective: in.Objective, LatencyThresholdMS: in.LatencyThresholdMS,
		Target: *in.Target, Period: period, BurnAlerts: policy, NotificationChannels: in.NotificationChannels}
	if err := d.Validate(); err != nil {
		return 0, sloFieldError(err)
	}
	return period, nil
}

// parseBurnAlerts reads the body's policy into internal/slo's form and
// rewrites each window in canonical form.
func parseBurnAlerts(bs []BurnAlertPolicy) ([]slo.BurnAlert, error) {
	if len(bs) > maxBurnAlerts {
		return nil, badParam("burn_alerts", "at most %d entries", maxBurnAlerts)
	}
	p := make([]slo.BurnAlert, len(bs))
	for i := range bs {
		b := &bs[i]
		field := func(name string) string { return "burn_alerts[" + strconv.Itoa(i) + "]." + name }
		long, err := slo.ParseDuration(b.Long)
		if err != nil {
			return nil, badParam(field("long"), "%s", err)
		}
		short, err := slo.ParseDuration(b.Short)
		if err != nil {
			return nil, badParam(field("short"), "%s", err)
		}
		b.Long, b.Short = slo.FormatDuration(long), slo.FormatDuration(short)
		p[i] = slo.BurnAlert{Severity: b.Severity, BurnRate: b.BurnRate, Long: slo.Duration(long), Short: slo.Duration(short)}
	}
	if err := slo.ValidatePolicy(p); err != nil {
		return nil, sloFieldError(err)
	}
	return p, nil
}

// sloFieldError turns internal/slo's "field: message" into a 400 naming
// the field.
func sloFieldError(err error) error {
	field, msg, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		field, msg = "body", err.Error()
	}
	return badParam(field, "%s", msg)
}

// decodeSLOFile reads SLO_FILE's content: a JSON array of SLOInput, each
// validated; names must be distinct.
func decodeSLOFile(b []byte) ([]SLOInput, []time.Duration, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var ins []SLOInput
	if err := dec.Decode(&ins); err != nil {
		return nil, nil, fmt.Errorf("want a JSON array of SLO definitions: %w", err)
	}
	periods := make([]time.Duration, len(ins))
	names := map[string]bool{}
	for i := range ins {
		p, err := validateSLO(&ins[i], ruleChannels)
		if err != nil {
			return nil, nil, fmt.Errorf("entry %d (%q): %w", i+1, truncate(ins[i].Name, 64), err)
		}
		if names[ins[i].Name] {
			return nil, nil, fmt.Errorf("entry %d: name %q defined twice", i+1, truncate(ins[i].Name, 64))
		}
		names[ins[i].Name] = true
		periods[i] = p
	}
	return ins, periods, nil
}

// sloBody decodes and validates the body of POST /slos and PUT /slos/{id}.
func sloBody(c *fiber.Ctx) (SLOInput, time.Duration, error) {
	var in SLOInput
	if err := decodeBody(c, &in); err != nil {
		return in, 0, err
	}
	period, err := validateSLO(&in, ruleChannels)
	return in, period, err
}

func (s *Server) handleCreateSLO(c *fiber.Ctx) error {
	in, period, err := sloBody(c)
	if err != nil {
		return err
	}
	d, err := s.st.createSLO(c.UserContext(), &in, period)
	if err != nil {
		return err
	}
	s.slos.changed(c.UserContext())
	c.Location("/slos/" + itoa(d.ID))
	return c.Status(fiber.StatusCreated).JSON(d)
}

func (s *Server) handleUpdateSLO(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	in, period, err := sloBody(c)
	if err != nil {
		return err
	}
	d, err := s.st.updateSLO(c.UserContext(), id, &in, period)
	if err != nil {
		return err
	}
	s.slos.changed(c.UserContext())
	return c.JSON(d)
}

func (s *Server) handleDeleteSLO(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	if err := s.st.deleteSLO(c.UserContext(), id); err != nil {
		return err
	}
	s.slos.changed(c.UserContext())
	return c.SendStatus(fiber.StatusNoContent)
}
