package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/event"
)

// serviceParamApp serves the API's own query validation for ?service=
// (checkQuery, then query.service) with the API's error handler, without a
// database.
func serviceParamApp() *fiber.App {
	s := &Server{}
	app := fiber.New(fiber.Config{ErrorHandler: s.errorHandler, DisableStartupMessage: true})
	app.Get("/x", func(c *fiber.Ctx) error {
		if err := checkQuery(c, []string{"service"}); err != nil {
			return err
		}
		v, err := query{c}.service()
		if err != nil {
			return err
		}
		return c.SendString(v)
	})
	return app
}

// jsonString writes s as a JSON string literal keeping its bytes, invalid
// UTF-8 included (json.Marshal would replace it with U+FFFD).
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// checkServiceParam asserts that the API accepts name as ?service= exactly
// when the event decoder accepts it as an event's service, and otherwise
// answers 400 naming the service field.
func checkServiceParam(t *testing.T, app *fiber.App, name string) {
	t.Helper()
	now := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	in := `{"timestamp":"2026-11-29T00:59:00Z","service":` + jsonString(name) + `,"level":"info","latency_ms":1}`
	ev, decErr := event.Decode([]byte(in), now, event.Limits{})
	if decErr != nil && event.ReasonOf(decErr) != event.ReasonBadService {
		t.Fatalf("Decode(%q): %v, want accepted or bad_service", in, decErr)
	}
	req := httptest.NewRequest("GET", "/x?service="+url.QueryEscape(name), nil)
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if decErr == nil {
		if resp.StatusCode != 200 || string(body) != ev.Service || ev.Service != name {
			t.Fatalf("service %q: decoder accepts it (as %q), API answers %d %s", name, ev.Service, resp.StatusCode, body)
		}
		return
	}
	var e errorBody
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != 400 || e.Field != "service" {
		t.Fatalf("service %q: decoder refuses it (%v), API answers %d %s, want 400 field service", name, decErr, resp.StatusCode, body)
	}
}

// serviceNames is the corpus of TestServiceParamMatchesDecoder and the
// seeds of FuzzServiceParamMatchesDecoder.
var serviceNames = []string{
	"checkout", "payments-api.v2", "café-支付 ✓", "check out", "a\u00a0b", "a\u200db", "😀",
	strings.Repeat("s", 128), strings.Repeat("é", 64), "' OR 1=1--", "a+b", "a&b=c", "%41",
	"", " ", "   ", "\t", " checkout", "checkout ", "checkout\n", "\u00a0x", "x\u3000",
	"a\x00b", "a\x7fb", "a\u0080b", "a\u0085b", "a\u009fb", "a\u2028b", "a\u2029b",
	"\xff\xfe", "caf\xc3", strings.Repeat("s", 129), strings.Repeat("é", 65),
}

func TestServiceParamMatchesDecoder(t *testing.T) {
	app := serviceParamApp()
	for _, name := range serviceNames {
		checkServiceParam(t, app, name)
	}
}

func FuzzServiceParamMatchesDecoder(f *testing.F) {
	for _, name := range serviceNames {
		f.Add(name)
	}
	app := serviceParamApp()
	f.Fuzz(func(t *testing.T, name string) {
		checkServiceParam(t, app, name)
	})
}
