package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

const (
	maxServiceBytes = event.MaxServiceBytes
	maxParamBytes   = 256
	defaultLimit    = 100
	maxLimit        = 1000
)

// truncate shortens s to at most n bytes of valid UTF-8 (for messages).
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// checkQuery rejects unknown and repeated query parameters and values that
// are not valid UTF-8 or are too long.
func checkQuery(c *fiber.Ctx, allowed []string) error {
	var err error
	var seen uint64 // bit i: allowed[i] seen
	c.Context().QueryArgs().VisitAll(func(k, v []byte) {
		if err != nil || (len(k) == 0 && len(v) == 0) { // stray "&"
			return
		}
		idx := -1
		for i, a := range allowed {
			if string(k) == a {
				idx = i
				break
			}
		}
		if idx < 0 {
			name := truncate(string(k), 64)
			if name == "" {
				name = "(empty)"
			}
			err = badParam(name, "unknown query parameter (allowed: %s)", listOrNone(allowed))
			return
		}
		if seen&(1<<idx) != 0 {
			err = badParam(allowed[idx], "given more than once")
			return
		}
		seen |= 1 << idx
		if len(v) > maxParamBytes {
			err = badParam(allowed[idx], "longer than %d bytes", maxParamBytes)
			return
		}
		if !utf8.Valid(v) {
			err = badParam(allowed[idx], "not valid UTF-8")
		}
	})
	return err
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// query reads validated query parameters. Presence is told apart from an
// empty value: "?service=" is an error, not "no filter".
type query struct{ c *fiber.Ctx }

func (q query) raw(name string) (string, bool) {
	args := q.c.Context().QueryArgs()
	if !args.Has(name) {
		return "", false
	}
	return string(args.Peek(name)), true
}

// digits reports whether s is a non-empty run of ASCII digits.
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// enum returns the value of name, which must be one of values; def when absent.
func (q query) enum(name, def string, values ...string) (string, error) {
	v, ok := q.raw(name)
	if !ok {
		return def, nil
	}
	for _, a := range values {
		if v == a {
			return a, nil
		}
	}
	return "", badParam(name, "%q is not one of %s", truncate(v, 64), strings.Join(values, ", "))
}

// optEnum is enum with "" (no filter) when absent.
func (q query) optEnum(name string, values ...string) (string, error) {
	return q.enum(name, "", values...)
}

// limit returns a row limit in [1, maxLimit], def when absent.
func (q query) limit(def int) (int, error) {
	v, ok := q.raw("limit")
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if !digits(v) || err != nil || n < 1 || n > maxLimit {
		return 0, badParam("limit", "want an integer from 1 to %d, got %q", maxLimit, truncate(v, 64))
	}
	return n, nil
}

// service returns the service filter ("" when absent). Exactly the names
// the event decoder accepts are valid (event.ValidService), so every stored
// service can be asked for. It is only ever a bound query parameter.
func (q query) service() (string, error) {
	v, ok := q.raw("service")
	if !ok {
		return "", nil
	}
	if err := event.ValidService(v); err != nil {
		return "", badParam("service", "%s", err)
	}
	return v, nil
}

func validName(v string, max int) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("must not be empty")
	}
	if len(v) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return errors.New("contains control characters")
		}
	}
	return nil
}

// minTime and maxTime bound accepted timestamps (PostgreSQL's timestamptz
// covers far more; these keep arithmetic and epochs sane).
var (
	minTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// parseTime accepts RFC 3339 (with a zone) or whole epoch seconds.
func parseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, errors.New("empty")
	}
	if digits(v) {
		if len(v) > 11 {
			return time.Time{}, errors.New("epoch seconds out of range (milliseconds are not accepted)")
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		t := time.Unix(n, 0).UTC()
		if t.After(maxTime) {
			return time.Time{}, errors.New("out of range")
		}
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New("want RFC 3339 (2026-01-02T15:04:05Z) or whole epoch seconds")
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, errors.New("out of range (1970..9999)")
	}
	return t.UTC(), nil
}

// timeParam returns the time in name, or nil when absent.
func (q query) timeParam(name string) (*time.Time, error) {
	v, ok := q.raw(name)
	if !ok {
		return nil, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return nil, badParam(name, "%q: %s", truncate(v, 64), err)
	}
	return &t, nil
}

// timeRange reads from/to; to must be after from when both are given.
func (q query) timeRange() (from, to *time.Time, err error) {
	if from, err = q.timeParam("from"); err != nil {
		return nil, nil, err
	}
	if to, err = q.timeParam("to"); err != nil {
		return nil, nil, err
	}
	if from != nil && to != nil && !to.After(*from) {
		return nil, nil, badParam("to", "must be after from")
	}
	return from, to, nil
}

// window returns the configured window named by the window parameter
// (aliases such as 1m or 60min are accepted), or the smallest when absent.
func (s *Server) windowParam(q query) (window.Window, error) {
	v, ok := q.raw("window")
	if !ok {
		return s.cfg.Windows[0], nil
	}
	return s.lookupWindow("window", v)
}

func (s *Server) lookupWindow(field, v string) (window.Window, error) {
	if w, ok := s.windows[v]; ok {
		return w, nil
	}
	if w, err := window.Parse(v); err == nil {
		if cw, ok := s.windows[w.Name]; ok {
			return cw, nil
		}
	}
	return window.Window{}, badParam(field, "%q is not a configured window (%s)", truncate(v, 64), strings.Join(s.winNames, ", "))
}

// float returns a finite number in [min, max], def when absent.
func (q query) float(name string, def, min, max float64) (float64, error) {
	v, ok := q.raw(name)
	if !ok {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < min || f > max {
		return 0, badParam(name, "want a number from %g to %g, got %q", min, max, truncate(v, 64))
	}
	return f, nil
}

// idParam reads the :id path parameter as a positive integer.
func idParam(c *fiber.Ctx) (int64, error) {
	v := c.Params("id")
	n, err := strconv.ParseInt(v, 10, 64)
	if !digits(v) || err != nil || n < 1 {
		return 0, badParam("id", "want a positive integer id, got %q", truncate(v, 64))
	}
	return n, nil
}

// decodeBody decodes a JSON object strictly into dst: unknown fields,
// trailing data and type errors are 400s naming the field.
func decodeBody(c *fiber.Ctx, dst any) error {
	body := c.Body()
	if len(strings.TrimSpace(string(body))) == 0 {
		return badParam("body", "a JSON object is required")
	}
	if ct := string(c.Request().Header.ContentType()); ct != "" && !strings.HasPrefix(strings.ToLower(ct), fiber.MIMEApplicationJSON) {
		return &apiError{Status: fiber.StatusUnsupportedMediaType, Field: "body", Msg: "Content-Type must be application/json"}
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badParam("body", "unexpected data after the JSON object")
	}
	return nil
}
