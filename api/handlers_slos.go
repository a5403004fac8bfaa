package api

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/slo"
	"github.com/stacklens/stacklens/internal/window"
)

// SLOsResponse is GET /slos.
type SLOsResponse struct {
	SLOs []slo.Status `json:"slos" doc:"by id"`
}

// SLOHistoryResponse is GET /slos/{id}/history.
type SLOHistoryResponse struct {
	ID          int64       `json:"id"`
	From        time.Time   `json:"from"`
	To          time.Time   `json:"to"`
	StepSeconds int64       `json:"step_seconds" doc:"spacing of the points: 3600, or the period's table size when longer"`
	Points      []slo.Point `json:"points" doc:"one per step boundary in [from, to], each over the complete buckets of the rolling period before it"`
}

// maxSLOHistory bounds the range of GET /slos/{id}/history (366 days of
// hourly points).
const maxSLOHistory = 366 * 24 * time.Hour

func (s *Server) handleSLOs(c *fiber.Ctx) error {
	ctx := c.UserContext()
	return sendVia(c, s.sloCache, "", func() ([]byte, error) {
		st, err := s.st.sloStatuses(ctx, nil, s.now(), s.cfg.Windows)
		if err != nil {
			return nil, err
		}
		return marshalJSON(SLOsResponse{SLOs: st})
	})
}

func (s *Server) handleSLO(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	return sendVia(c, s.sloCache, "", func() ([]byte, error) {
		st, err := s.st.sloStatuses(ctx, &id, s.now(), s.cfg.Windows)
		if err != nil {
			return nil, err
		}
		if len(st) == 0 {
			return nil, notFound("slo")
		}
		return marshalJSON(st[0])
	})
}

func (s *Server) handleSLOHistory(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	q := query{c}
	from, to, err := q.timeRange()
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	return s.sendShared(c, func() ([]byte, error) {
		ctx, cancel := s.st.ctx(ctx)
		defer cancel()
		defs, _, err := slo.LoadDefinitions(ctx, s.st.r, &id, false)
		if err != nil {
			return nil, err
		}
		if len(defs) == 0 {
			return nil, notFound("slo")
		}
		d := &defs[0]
		// Default: the last period, ending now.
		t := s.now().UTC()
		if to != nil {
			t = to.UTC()
		}
		f := t.Add(-d.Period)
		if from != nil {
			f = from.UTC()
		}
		switch {
		case !t.After(f):
			return nil, badParam("from", "must be before to (default to: now)")
		case t.Sub(f) > maxSLOHistory:
			return nil, badParam("from", "at most 366 days before to")
		}
		step, points, err := slo.History(ctx, s.st.r, d, f, t, s.cfg.Windows)
		if err != nil {
			return nil, err
		}
		return marshalJSON(SLOHistoryResponse{ID: id, From: f, To: t, StepSeconds: int64(step / time.Second), Points: points})
	})
}

// sloStatuses is the status of every SLO (id nil) or of one, from the
// metrics tables: a handful of queries whatever the number of SLOs.
func (st *store) sloStatuses(ctx context.Context, id *int64, now time.Time, windows []window.Window) ([]slo.Status, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	defs, invalid, err := slo.LoadDefinitions(ctx, st.r, id, false)
	if err != nil {
		return nil, err
	}
	out, err := slo.Statuses(ctx, st.r, defs, invalid, now, windows)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []slo.Status{}
	}
	return out, nil
}
