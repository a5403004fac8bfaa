package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// webhook posts JSON to one configured URL. Redirects are not followed
// and the URL never comes from user input (no SSRF surface).
type webhook struct {
	name   string
	url    string
	client *http.Client
}

func newWebhook(name, rawURL string, timeout time.Duration, envVar string) (*webhook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%s: not an http(s) URL", envVar)
	}
	return &webhook{name: name, url: rawURL, client: &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// post sends body; 2xx is success, 429 and 5xx (and transport errors)
// are retried, other statuses are permanent failures.
func (w *webhook) post(ctx context.Context, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(b))
	if err != nil {
		return permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "stacklens-alerting")
	resp, err := w.client.Do(req)
	if err != nil {
		// The error text may contain the URL (a secret for Slack): drop it.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return fmt.Errorf("%s: %w", w.name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("%s: HTTP %d: %s", w.name, resp.StatusCode, strings.TrimSpace(string(msg)))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500 {
		return err
	}
	return permanent(err)
}

func (w *webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

// slack posts to a Slack incoming webhook: {"text": …}.
type slack struct{ *webhook }

func newSlack(rawURL string, timeout time.Duration) (*slack, error) {
	w, err := newWebhook("slack", rawURL, timeout, "SLACK_WEBHOOK_URL")
	if err != nil {
		return nil, err
	}
	return &slack{w}, nil
}

func (s *slack) send(ctx context.Context, evs []*Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		if i > 0 && errs[i-1] != nil && !isPermanent(errs[i-1]) {
			errs[i] = errs[i-1] // the endpoint is down: don't wait out every timeout
			continue
		}
		errs[i] = s.post(ctx, map[string]string{"text": slackText(ev)})
	}
	return errs
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackText(ev *Event) string {
	icon := map[string]string{stateFiring: ":rotating_light:", stateResolved: ":white_check_mark:",
		stateAcknowledged: ":eyes:"}[ev.State]
	var b strings.Builder
	fmt.Fprintf(&b, "%s *[%s] %s* (%s) — service `%s`\n", icon, strings.ToUpper(ev.State),
		slackEscaper.Replace(ev.Rule), ev.Severity, slackEscaper.Replace(ev.Service))
	b.WriteString(slackEscaper.Replace(ev.Message))
	fmt.Fprintf(&b, "\nalert_id `%s`", ev.AlertID)
	return b.String()
}

// pagerDuty sends Events API v2 events: trigger on firing, acknowledge,
// resolve; dedup_key = fingerprint.
type pagerDuty struct {
	*webhook
	key string
}

func newPagerDuty(rawURL, key string, timeout time.Duration) (*pagerDuty, error) {
	if rawURL == "" {
		rawURL = "https://events.pagerduty.com/v2/enqueue"
	}
	w, err := newWebhook("pagerduty", rawURL, timeout, "PAGERDUTY_URL")
	if err != nil {
		return nil, err
	}
	return &pagerDuty{webhook: w, key: key}, nil
}

func pdEvent(key string, ev *Event) map[string]any {
	action := map[string]string{stateFiring: "trigger", stateResolved: "resolve",
		stateAcknowledged: "acknowledge"}[ev.State]
	body := map[string]any{"routing_key": key, "event_action": action, "dedup_key": ev.Fingerprint}
	if action == "trigger" {
		body["payload"] = map[string]any{
			"summary":        truncate(fmt.Sprintf("[%s] %s: %s", ev.Severity, ev.Rule, ev.Message), 1024),
			"source":         ev.Service,
			"severity":       ev.Severity, // critical, warning and info are PagerDuty severities
			"timestamp":      ev.FiredAt.UTC().Format(time.RFC3339Nano),
			"component":      ev.Service,
			"group":          ev.Rule,
			"class":          ev.Metric,
			"custom_details": ev,
		}
		body["client"] = "StackLens"
	}
	return body
}

func (p *pagerDuty) send(ctx context.Context, evs []*Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		if i > 0 && errs[i-1] != nil && !isPermanent(errs[i-1]) {
			errs[i] = errs[i-1]
			continue
		}
		errs[i] = p.post(ctx, pdEvent(p.key, ev))
	}
	return errs
}
