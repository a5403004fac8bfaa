package api

import (
	"encoding/json"
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
	start, end, err := s.validateSilence(&in, true)
	if err != nil {
		return err
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

// validateSilence checks a silence as POST /silences accepts it and returns
// its period. PATCH validates the merged silence the same way;
// endsInFuture is false there when ends_at was not changed, so a comment can
// still be edited on a silence whose period is unchanged.
func (s *Server) validateSilence(in *SilenceInput, endsInFuture bool) (start, end time.Time, err error) {
	if in.RuleName == nil && in.Service == nil && in.Severity == nil {
		return start, end, badParam("rule_name", "at least one matcher (rule_name, service, severity) is required")
	}
	if in.RuleName != nil {
		if err := validName(*in.RuleName, 200); err != nil {
			return start, end, badParam("rule_name", "%s", err)
		}
	}
	if in.Service != nil {
		if err := event.ValidService(*in.Service); err != nil {
			return start, end, badParam("service", "%s", err)
		}
	}
	if in.Severity != nil && !slices.Contains(severities, *in.Severity) {
		return start, end, badParam("severity", "want one of %s", strings.Join(severities, ", "))
	}
	if len(in.Comment) > 1000 {
		return start, end, badParam("comment", "longer than 1000 bytes")
	}
	now := s.now().UTC()
	start = now
	if in.StartsAt != "" {
		t, err := parseTime(in.StartsAt)
		if err != nil {
			return start, end, badParam("starts_at", "%s", err)
		}
		start = t
	}
	switch {
	case in.EndsAt != "" && in.Duration != "":
		return start, end, badParam("duration", "give ends_at or duration, not both")
	case in.EndsAt != "":
		t, err := parseTime(in.EndsAt)
		if err != nil {
			return start, end, badParam("ends_at", "%s", err)
		}
		end = t
	case in.Duration != "":
		d, err := time.ParseDuration(in.Duration)
		if err != nil || d <= 0 {
			return start, end, badParam("duration", "want a positive duration such as 2h or 30m")
		}
		if d > maxSilence {
			return start, end, badParam("duration", "at most %s", maxSilence)
		}
		end = start.Add(d)
	default:
		return start, end, badParam("ends_at", "ends_at or duration is required")
	}
	if !end.After(start) {
		return start, end, badParam("ends_at", "must be after starts_at")
	}
	if endsInFuture && !end.After(now) {
		return start, end, badParam("ends_at", "must be in the future")
	}
	if end.Sub(start) > maxSilence {
		return start, end, badParam("ends_at", "a silence lasts at most %s", maxSilence)
	}
	return start, end, nil
}

func (s *Server) handleSilence(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	sil, err := s.st.silence(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(sil)
}

// SilencePatch is the body of PATCH /silences/{id}: only the fields given
// change. A matcher given as null is removed (at least one must remain);
// duration counts from the (possibly new) starts_at.
type SilencePatch struct {
	RuleName *string `json:"rule_name,omitempty" doc:"null removes the matcher"`
	Service  *string `json:"service,omitempty" doc:"null removes the matcher"`
	Severity *string `json:"severity,omitempty" enum:"info,warning,critical" doc:"null removes the matcher"`
	StartsAt *string `json:"starts_at,omitempty" doc:"RFC 3339 or epoch seconds"`
	EndsAt   *string `json:"ends_at,omitempty" doc:"RFC 3339 or epoch seconds; must be in the future"`
	Duration *string `json:"duration,omitempty" doc:"Go duration from starts_at, instead of ends_at"`
	Comment  *string `json:"comment,omitempty" doc:"at most 1000 characters"`
}

func (s *Server) handlePatchSilence(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	var p SilencePatch
	if err := decodeBody(c, &p); err != nil {
		return err
	}
	// The struct cannot tell an absent matcher from a null one; the keys can.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(c.Body(), &keys); err != nil {
		return bodyError(err)
	}
	if len(keys) == 0 {
		return badParam("body", "nothing to change")
	}
	for _, k := range []string{"starts_at", "ends_at", "duration", "comment"} {
		if v, ok := keys[k]; ok && string(v) == "null" {
			return badParam(k, "must not be null")
		}
	}
	sil, err := s.st.updateSilence(c.UserContext(), id, func(cur Silence) (*SilenceInput, time.Time, time.Time, error) {
		in := SilenceInput{
			RuleName: cur.RuleName, Service: cur.Service, Severity: cur.Severity, Comment: cur.Comment,
			StartsAt: cur.StartsAt.Format(time.RFC3339Nano), EndsAt: cur.EndsAt.Format(time.RFC3339Nano),
		}
		if _, ok := keys["rule_name"]; ok {
			in.RuleName = p.RuleName
		}
		if _, ok := keys["service"]; ok {
			in.Service = p.Service
		}
		if _, ok := keys["severity"]; ok {
			in.Severity = p.Severity
		}
		if p.Comment != nil {
			in.Comment = *p.Comment
		}
		if p.StartsAt != nil {
			in.StartsAt = *p.StartsAt
		}
		if p.Duration != nil {
			in.EndsAt, in.Duration = "", *p.Duration
		}
		if p.EndsAt != nil {
			in.EndsAt = *p.EndsAt
		}
		start, end, err := s.validateSilence(&in, p.EndsAt != nil || p.Duration != nil)
		return &in, start, end, err
	})
	if err != nil {
		return err
	}
	if s.hooks.SilencesChanged != nil {
		s.hooks.SilencesChanged(c.UserContext(), sil.ID, "updated")
	}
	return c.JSON(sil)
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
