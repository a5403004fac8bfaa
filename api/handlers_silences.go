package api

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/event"
)

// Silence is one row of analytics_alert_silences.
type Silence struct {
	ID        int64     `json:"id"`
	RuleName  *string   `json:"rule_name" doc:"null matches any rule"`
	Service   *string   `json:"service" doc:"null matches any service"`
	Severity  *string   `json:"severity" doc:"null matches any severity"`
	StartsAt  time.Time `json:"starts_at"`
	EndsAt    time.Time `json:"ends_at"`
	CreatedBy string    `json:"created_by"`
	Comment   string    `json:"comment"`
	CreatedAt time.Time `json:"created_at"`
	Active    bool      `json:"active" doc:"now is in [starts_at, ends_at)"`
}

// SilenceInput is the body of POST /silences. At least one matcher
// (rule_name, service, severity) is required, and exactly one of ends_at
// and duration.
type SilenceInput struct {
	RuleName *string `json:"rule_name,omitempty"`
	Service  *string `json:"service,omitempty"`
	Severity *string `json:"severity,omitempty" enum:"info,warning,critical"`
	StartsAt string  `json:"starts_at,omitempty" doc:"RFC 3339 or epoch seconds; default now"`
	EndsAt   string  `json:"ends_at,omitempty" doc:"RFC 3339 or epoch seconds"`
	Duration string  `json:"duration,omitempty" doc:"Go duration such as 2h or 30m, from starts_at"`
	Comment  string  `json:"comment,omitempty" doc:"at most 1000 characters"`
}

// SilencesResponse is GET /silences.
type SilencesResponse struct {
	Count    int       `json:"count"`
	Silences []Silence `json:"silences" doc:"latest ending first"`
}

const maxSilence = 90 * 24 * time.Hour

var silenceStates = []string{"current", "active", "pending", "expired", "all"}

func (s *Server) handleSilences(c *fiber.Ctx) error {
	q := query{c}
	state, err := q.enum("state", "current", silenceStates...)
	if err != nil {
		return err
	}
	limit, err := q.limit(defaultLimit)
	if err != nil {
		return err
	}
	rows, err := s.st.silences(c.UserContext(), state, limit)
	if err != nil {
		return err
	}
	return c.JSON(SilencesResponse{Count: len(rows), Silences: rows})
}

func (s *Server) handleCreateSilence(c *fiber.Ctx) error {
	var in SilenceInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.RuleName == nil && in.Service == nil && in.Severity == nil {
		return badParam("rule_name", "at least one matcher (rule_name, service, severity) is required")
	}
	if in.RuleName != nil {
		if err := validName(*in.RuleName, 200); err != nil {
			return badParam("rule_name", "%s", err)
		}
	}
	if in.Service != nil {
		if err := event.ValidService(*in.Service); err != nil {
			return badParam("service", "%s", err)
		}
	}
	if in.Severity != nil && !slices.Contains(severities, *in.Severity) {
		return badParam("severity", "want one of %s", strings.Join(severities, ", "))
	}
	if len(in.Comment) > 1000 {
		return badParam("comment", "longer than 1000 bytes")
	}
	now := s.now().UTC()
	start := now
	if in.StartsAt != "" {
		t, err := parseTime(in.StartsAt)
		if err != nil {
			return badParam("starts_at", "%s", err)
		}
		start = t
	}
	var end time.Time
	switch {
	case in.EndsAt != "" && in.Duration != "":
		return badParam("duration", "give ends_at or duration, not both")
	case in.EndsAt != "":
		t, err := parseTime(in.EndsAt)
		if err != nil {
			return badParam("ends_at", "%s", err)
		}
		end = t
	case in.Duration != "":
		d, err := time.ParseDuration(in.Duration)
		if err != nil || d <= 0 {
			return badParam("duration", "want a positive duration such as 2h or 30m")
		}
		if d > maxSilence {
			return badParam("duration", "at most %s", maxSilence)
		}
		end = start.Add(d)
	default:
		return badParam("ends_at", "ends_at or duration is required")
	}
	if !end.After(start) {
		return badParam("ends_at", "must be after starts_at")
	}
	if !end.After(now) {
		return badParam("ends_at", "must be in the future")
	}
	if end.Sub(start) > maxSilence {
		return badParam("ends_at", "a silence lasts at most %s", maxSilence)
	}
	sil, err := s.st.createSilence(c.UserContext(), &in, start, end, caller(c))
	if err != nil {
		return err
	}
	if s.hooks.SilencesChanged != nil {
		s.hooks.SilencesChanged(c.UserContext(), sil.ID, "created")
	}
	c.Location("/silences/" + itoa(sil.ID))
	return c.Status(fiber.StatusCreated).JSON(sil)
}

func (s *Server) handleDeleteSilence(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	if err := s.st.deleteSilence(c.UserContext(), id); err != nil {
		return err
	}
	if s.hooks.SilencesChanged != nil {
		s.hooks.SilencesChanged(c.UserContext(), id, "deleted")
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
