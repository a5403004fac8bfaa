package compose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/stacklens/stacklens/internal/config"
)

// scrapeSnippet holds the scrape jobs the README tells operators of their
// own Prometheus to paste; the live check scrapes with exactly these jobs.
const scrapeSnippet = "prometheus/scrape-stacklens.yml"

// liveRoles are the long-running roles, one process each, as a deployment
// runs them; each serves /metrics on its own METRICS_PORT.
var liveRoles = []string{"bridge", "processor", "projections", "api"}

// absentRule is the rule that must fire when the processors are gone. The
// live check loads a copy of alerts.yml in which its `for` is shortened
// from 2m (the unit test in alerts_test.yml covers the real 2m) so the
// check stays within its time budget.
const (
	absentRule    = "StackLensRoleAbsent"
	absentRuleFor = "5s"
)

// panelNoDataAllowed are Prometheus panel queries that may return no
// series on a healthy stack under steady traffic, keyed by
// "<dashboard uid>/<panel title>/<refId>", with the reason. Every other
// Prometheus query of the dashboards must return data during the check.
var panelNoDataAllowed = map[string]string{
	"stacklens-health/Errors / s by component/C": "stacklens_api_requests_total{code=~\"5..\"} exists only after a 5xx response (a fault)",
}

// ruleTrueAllowed are alerting rules whose condition may hold on a healthy
// stack during the check (they are then pending or firing), with the
// reason. Every other rule's expression must return no series.
var ruleTrueAllowed = map[string]string{}

// grafanaVarValues stand in for Grafana's variables when a panel query is
// sent to Prometheus directly: with a 1 s scrape interval Grafana's
// $__rate_interval would be 4 s (4 × scrape interval). 30 s holds enough
// samples for rate() on a busy machine, and keeps a rare event (the alert
// panels see a handful of deliveries per run, often in one burst) in the
// window across a round of panel queries, which takes seconds when the
// machine is loaded: with 10 s, one CI run's deliveries fell between two
// rounds of the delivery-latency panel.
// panelDataTimeout bounds the wait for every panel to show data: the alert
// panels need a window to become final (up to a minute after traffic
// starts), an alert to fire and a notification to be delivered.
const panelDataTimeout = 150 * time.Second

var grafanaVarValues = map[string]string{
	"__rate_interval": "30s", "__interval": "2s", "__range": "1m", "__range_s": "60", "__range_ms": "60000",
	"__interval_ms": "2000", "__rate_interval_ms": "30000",
}

// TestPrometheusAndDashboardsLive runs the product as a deployment does —
// infrastructure from `stacklens dev --infra-only`, each role its own
// process with its own METRICS_PORT, `stacklens loadgen` as traffic, a
// webhook receiver for alert notifications — and a real Prometheus server
// that scrapes the roles with the jobs of prometheus/scrape-stacklens.yml
// every second and evaluates alerts.yml every second. It checks that every
// target is up, every rule evaluates without error and stays silent while
// the pipeline is healthy, every Prometheus query of every Grafana panel
// runs and returns data while traffic flows (panelNoDataAllowed excepted),
// and that stopping the processor makes StackLensRoleAbsent pending, then
// firing.
func TestPrometheusAndDashboardsLive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the product and a Prometheus server (about two minutes)")
	}
	promBin := prometheusTool(t, "prometheus")
	prometheusTool(t, "promtool")
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "stacklens-live-")
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL runs as the postgres user when the test runs as root.
	_ = os.Chmod(dir, 0o755)
	t.Cleanup(func() {
		if !t.Failed() {
			_ = os.RemoveAll(dir)
		} else {
			t.Logf("logs and data kept in %s", dir)
		}
	})
	exe := filepath.Join(dir, "stacklens")
	build := exec.CommandContext(ctx, "go", "build", "-o", exe, "./cmd/stacklens")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/stacklens: %v\n%s", err, out)
	}
	t.Logf("built in %v", time.Since(began).Round(time.Millisecond))
	envFile := filepath.Join(dir, "empty.env")
	if err := os.WriteFile(envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// Alert notifications go to this Slack webhook.
	var slackPosts sync.Map
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slackPosts.Store(time.Now(), true)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}))
	defer slack.Close()

	// Infrastructure: embedded NATS and Kafka, a private PostgreSQL.
	dataDir := filepath.Join(dir, "data")
	infra := startLiveProc(t, dir, "dev", exe, []string{"dev", "--infra-only", "--nats-port", "-1", "--kafka-port", "-1"}, map[string]string{
		"DATA_DIR": dataDir, "ENV_FILE": envFile, "METRICS_PORT": "0", "DB_PORT": strconv.Itoa(freePort(t)), "LOG_LEVEL": "warn",
	})
	var ep struct{ Kafka, NATS, Postgres string }
	pollUntil(t, ctx, 2*time.Minute, infra, func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, "endpoints.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &ep)
	})

	// Traffic from the start (the first one-minute window becomes final
	// sooner): events with an error burst on one service, which makes the
	// alert engine fire and deliver.
	startLiveProc(t, dir, "loadgen", exe, []string{"loadgen", "--rate", "200", "--duration", "0", "--services", "8",
		"--burst-service", "checkout", "--burst-at", "0s", "--burst-for", "1h"}, map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": ep.Kafka, "ENV_FILE": envFile, "LOG_LEVEL": "warn", "METRICS_PORT": "0",
	})
	// The roles, each with its own metrics port.
	apiPort := freePort(t)
	roleEnv := map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": ep.Kafka, "NATS_URL": ep.NATS, "DATABASE_URL": ep.Postgres,
		"DATA_DIR": dataDir, "ENV_FILE": envFile, "LOG_LEVEL": "warn",
		"METRICS_HOST": "127.0.0.1", "ENABLE_METRICS": "true",
		"API_HOST": "127.0.0.1", "API_PORT": strconv.Itoa(apiPort), "API_RATE_LIMIT": "0",
		"API_READER_KEYS": "", "API_ADMIN_KEYS": "", "API_USERS": "",
		// Windows become final a second after they end, so alerts are
		// evaluated (and delivered) within the check.
		"ALLOWED_LATENESS": "1s", "FLUSH_INTERVAL": "100ms",
		"SLACK_WEBHOOK_URL": slack.URL,
	}
	targets := map[string][]string{}
	procs := map[string]*liveProc{}
	for _, role := range liveRoles {
		env := map[string]string{}
		for k, v := range roleEnv {
			env[k] = v
		}
		port := freePort(t)
		env["METRICS_PORT"] = strconv.Itoa(port)
		procs[role] = startLiveProc(t, dir, role, exe, []string{role}, env)
		targets["stacklens-"+role] = []string{"127.0.0.1:" + strconv.Itoa(port)}
	}
	for _, role := range liveRoles {
		p := procs[role]
		pollUntil(t, ctx, time.Minute, p, func() error {
			return httpOK(ctx, "http://"+targets["stacklens-"+role][0]+"/ready")
		})
	}
	t.Logf("roles ready after %v", time.Since(began).Round(time.Millisecond))

	// Dashboard-like reads of the API.
	apiBase := "http://127.0.0.1:" + strconv.Itoa(apiPort)
	readers, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	go func() {
		for readers.Err() == nil {
			for _, p := range []string{"/metrics?window=1min&limit=5", "/health-status", "/alerts?status=active", "/stats"} {
				_ = httpOK(readers, apiBase+p)
			}
			select {
			case <-readers.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()

	// Prometheus, configured from the documented snippet.
	promDir := filepath.Join(dir, "prometheus")
	if err := os.MkdirAll(promDir, 0o755); err != nil {
		t.Fatal(err)
	}
	promCfg := livePrometheusConfig(t, promDir, targets)
	if out, err := promtool(t, promDir, "check", "config", promCfg); err != nil {
		t.Fatalf("promtool check config on the generated configuration: %v\n%s", err, out)
	}
	promAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	prom := startLiveProc(t, dir, "prometheus", promBin, []string{
		"--config.file=" + promCfg, "--storage.tsdb.path=" + filepath.Join(promDir, "data"),
		"--web.listen-address=" + promAddr, "--log.level=warn",
	}, nil)
	pc := &promClient{base: "http://" + promAddr}
	pollUntil(t, ctx, time.Minute, prom, func() error { return httpOK(ctx, pc.base+"/-/ready") })

	// Every target up.
	pollUntil(t, ctx, time.Minute, prom, func() error {
		var res struct {
			ActiveTargets []struct {
				Labels    map[string]string
				Health    string
				LastError string
			}
		}
		if err := pc.get(ctx, "/api/v1/targets", nil, &res); err != nil {
			return err
		}
		up := map[string]bool{}
		var bad []string
		for _, tg := range res.ActiveTargets {
			if tg.Health == "up" {
				up[tg.Labels["job"]] = true
			} else {
				bad = append(bad, fmt.Sprintf("%s %s: %s %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError))
			}
			if want := strings.TrimPrefix(tg.Labels["job"], "stacklens-"); tg.Labels["role"] != want {
				return fmt.Errorf("target %v: role label %q, want %q (relabel_configs of %s)", tg.Labels, tg.Labels["role"], want, scrapeSnippet)
			}
		}
		if len(up) != len(liveRoles) || len(bad) > 0 {
			return fmt.Errorf("targets up: %v; not up: %v", keys(up), bad)
		}
		return nil
	})
	t.Logf("all %d targets up after %v", len(liveRoles), time.Since(began).Round(time.Millisecond))

	// Every rule loaded and evaluated without error.
	rules := alertRules(t)
	ruleErrs := map[string]bool{}
	pollUntil(t, ctx, 30*time.Second, prom, func() error {
		var res struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
		if err := pc.get(ctx, "/api/v1/rules", nil, &res); err != nil {
			return err
		}
		n := 0
		for _, g := range res.Groups {
			for _, r := range g.Rules {
				n++
				switch r.Health {
				case "ok":
				case "err":
					if !ruleErrs[r.Name] {
						t.Errorf("Prometheus cannot evaluate rule %s: %s", r.Name, r.LastError)
					}
					ruleErrs[r.Name] = true
				default:
					return fmt.Errorf("rule %s: health %q", r.Name, r.Health)
				}
			}
		}
		if n != len(rules) {
			return fmt.Errorf("Prometheus has %d rules, %s %d", n, promRulesFile, len(rules))
		}
		return nil
	})

	// Every panel query runs; each returns data at some point while traffic
	// flows (windows become final, alerts fire and are delivered within
	// about a minute).
	panels := prometheusPanelQueries(t)
	for k := range panelNoDataAllowed {
		found := false
		for _, q := range panels {
			found = found || q.key == k
		}
		if !found {
			t.Errorf("panelNoDataAllowed names %q, which is no Prometheus query of the dashboards", k)
		}
	}
	hadData, failed := map[string]int{}, map[string]error{}
	deadline := time.Now().Add(panelDataTimeout)
	for {
		var missing []string
		for _, q := range panels {
			if hadData[q.key] > 0 || failed[q.key] != nil {
				continue
			}
			n, err := pc.query(ctx, q.promQL)
			switch {
			case err != nil:
				failed[q.key] = err
				t.Errorf("panel query %s fails: %v\n  PromQL: %s", q.key, err, q.promQL)
			case n > 0:
				hadData[q.key] = n
			case panelNoDataAllowed[q.key] == "":
				missing = append(missing, fmt.Sprintf("%s: %s", q.key, q.promQL))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Errorf("%d panel queries returned no series while traffic flowed for %v (a panel that only shows data during a fault goes into panelNoDataAllowed, with the reason):\n  %s",
				len(missing), panelDataTimeout, strings.Join(missing, "\n  "))
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	for _, q := range panels {
		if n := hadData[q.key]; n > 0 {
			t.Logf("panel %s: %d series", q.key, n)
		} else if why := panelNoDataAllowed[q.key]; why != "" && failed[q.key] == nil {
			t.Logf("panel %s: no data, allowed: %s", q.key, why)
		}
	}
	posts := 0
	slackPosts.Range(func(any, any) bool { posts++; return true })
	t.Logf("%d panel queries evaluated: %d returned data, %d failed, %d allowlisted without data; %d Slack notifications received; after %v",
		len(panels), len(hadData), len(failed), len(panels)-len(hadData)-len(failed), posts, time.Since(began).Round(time.Millisecond))

	// Every rule's expression evaluates; on this healthy stack none holds.
	// A condition must hold three times in a row, a second apart: on a
	// loaded machine a single scrape may time out (up == 0 for a second).
	for _, r := range rules {
		var n int
		var err error
		for range 3 {
			if n, err = pc.query(ctx, r.Expr); err != nil || n == 0 {
				break
			}
			time.Sleep(time.Second) // the next rule evaluation (evaluation_interval 1s)
		}
		switch {
		case err != nil:
			t.Errorf("rule %s: %v", r.Alert, err)
		case n > 0 && ruleTrueAllowed[r.Alert] == "":
			t.Errorf("rule %s holds on a healthy stack (%d series): %s", r.Alert, n, strings.TrimSpace(r.Expr))
		default:
			t.Logf("rule %s: evaluates, %d series", r.Alert, n)
		}
	}
	var firing []string
	if err := pc.alerts(ctx, func(a promAlert) {
		if a.State == "firing" {
			firing = append(firing, fmt.Sprint(a.Labels))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(firing) > 0 {
		t.Errorf("alerts firing on a healthy stack: %v", firing)
	}

	// Stop the only processor: StackLensRoleAbsent goes pending, then fires.
	stopped := time.Now()
	if err := procs["processor"].stop(); err != nil {
		t.Error(err)
	}
	seen := map[string]time.Duration{}
	wrong := map[string]bool{}
	pollUntil(t, ctx, 60*time.Second, prom, func() error {
		err := pc.alerts(ctx, func(a promAlert) {
			if a.Labels["alertname"] == absentRule && a.Labels["job"] == "stacklens-processor" && seen[a.State] == 0 {
				seen[a.State] = time.Since(stopped)
			}
			if a.Labels["alertname"] == absentRule && a.Labels["job"] != "stacklens-processor" {
				wrong[fmt.Sprint(a.Labels)] = true
			}
		})
		if err != nil {
			return err
		}
		if seen["firing"] == 0 {
			return fmt.Errorf("%s for stacklens-processor: states seen %v", absentRule, seen)
		}
		return nil
	})
	if len(wrong) > 0 {
		t.Errorf("%s is active for %v too; only the processor is gone", absentRule, keys(wrong))
	}
	if seen["pending"] == 0 || seen["pending"] > seen["firing"] {
		t.Errorf("%s: want pending, then firing; saw %v", absentRule, seen)
	}
	t.Logf("processor stopped: %s pending after %v, firing after %v (for: %s); check took %v",
		absentRule, seen["pending"].Round(time.Millisecond), seen["firing"].Round(time.Millisecond), absentRuleFor, time.Since(began).Round(time.Millisecond))
}

// livePrometheusConfig writes prometheus.yml for the check: the scrape jobs
// of the documented snippet with the live targets, a 1 s scrape and
// evaluation interval, and alerts.yml (StackLensRoleAbsent's `for`
// shortened). It returns the file's path.
func livePrometheusConfig(t *testing.T, dir string, targets map[string][]string) string {
	t.Helper()
	var jobs []map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, scrapeSnippet)), &jobs); err != nil {
		t.Fatalf("%s: %v", scrapeSnippet, err)
	}
	seen := map[string]bool{}
	for _, j := range jobs {
		name := asString(j["job_name"])
		tg, ok := targets[name]
		if !ok {
			t.Fatalf("%s: job %q is no StackLens role (want %v)", scrapeSnippet, name, keys(targets))
		}
		sc := asList(j["static_configs"])
		if len(sc) != 1 || len(asList(asMap(sc[0])["targets"])) == 0 {
			t.Fatalf("%s: job %s: want one static_configs entry with example targets", scrapeSnippet, name)
		}
		j["static_configs"] = []any{map[string]any{"targets": tg}}
		seen[name] = true
	}
	for name := range targets {
		if !seen[name] {
			t.Fatalf("%s has no job %s", scrapeSnippet, name)
		}
	}
	// The Compose configuration uses the same job names.
	for _, j := range asList(readYAML(t, promConfigFile)["scrape_configs"]) {
		if name := asString(asMap(j)["job_name"]); strings.HasPrefix(name, "stacklens-") && !seen[name] {
			t.Errorf("%s scrapes job %s, which %s lacks", promConfigFile, name, scrapeSnippet)
		}
	}

	var rules map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, promRulesFile)), &rules); err != nil {
		t.Fatal(err)
	}
	shortened := false
	for _, g := range asList(rules["groups"]) {
		for _, r := range asList(asMap(g)["rules"]) {
			if rm := asMap(r); asString(rm["alert"]) == absentRule {
				rm["for"] = absentRuleFor
				shortened = true
			}
		}
	}
	if !shortened {
		t.Fatalf("%s has no rule %s", promRulesFile, absentRule)
	}
	rb, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "alerts.yml")
	if err := os.WriteFile(rulesPath, rb, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s",
			"external_labels": map[string]any{"stack": "stacklens"},
		},
		"rule_files":     []any{rulesPath},
		"scrape_configs": jobs,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// panelQuery is one Prometheus query of a dashboard panel.
type panelQuery struct {
	key    string // <dashboard uid>/<panel title>/<refId>
	promQL string // with Grafana's variables substituted
}

// prometheusPanelQueries lists the queries of every panel whose data
// source is Prometheus (the query's own, else the panel's).
func prometheusPanelQueries(t *testing.T) []panelQuery {
	t.Helper()
	dsTypes := provisionedDatasources(t)
	files, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	sort.Strings(files)
	var out []panelQuery
	for _, f := range files {
		var d map[string]any
		if err := json.Unmarshal([]byte(readFile(t, f)), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vars := map[string]string{}
		for k, v := range grafanaVarValues {
			vars[k] = v
		}
		// Dashboard variables: their current value, else any value.
		for _, v := range asList(asMap(d["templating"])["list"]) {
			val := asString(asMap(asMap(v)["current"])["value"])
			if val == "" || val == "$__all" {
				val = ".*"
			}
			vars[asString(asMap(v)["name"])] = val
		}
		var walk func(panels []any)
		walk = func(panels []any) {
			for _, p := range panels {
				pm := asMap(p)
				walk(asList(pm["panels"]))
				for _, tg := range asList(pm["targets"]) {
					tm := asMap(tg)
					ds := asMap(tm["datasource"])
					if ds == nil {
						ds = asMap(pm["datasource"])
					}
					if dsTypes[asString(ds["uid"])] != "prometheus" || strings.TrimSpace(asString(tm["expr"])) == "" {
						continue
					}
					var unknown []string
					q := grafanaVarRE.ReplaceAllStringFunc(asString(tm["expr"]), func(m string) string {
						sub := grafanaVarRE.FindStringSubmatch(m)
						if v, ok := vars[sub[1]+sub[2]+sub[3]]; ok {
							return v
						}
						unknown = append(unknown, m)
						return m
					})
					key := asString(d["uid"]) + "/" + asString(pm["title"]) + "/" + asString(tm["refId"])
					if len(unknown) > 0 {
						t.Errorf("%s: no value for Grafana variables %v: add them to grafanaVarValues", key, unknown)
					}
					out = append(out, panelQuery{key: key, promQL: q})
				}
			}
		}
		walk(asList(d["panels"]))
	}
	if len(out) == 0 {
		t.Fatal("no Prometheus queries in the dashboards")
	}
	return out
}

// promClient talks to Prometheus' HTTP API.
type promClient struct{ base string }

func (c *promClient) get(ctx context.Context, path string, q url.Values, into any) error {
	u := c.base + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status, Error, ErrorType string
		Data                     json.RawMessage
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, into)
}

// query runs an instant query and returns how many series have a value
// that is a number (histogram_quantile over an empty window gives NaN:
// Grafana draws nothing).
func (c *promClient) query(ctx context.Context, promQL string) (int, error) {
	var res struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := c.get(ctx, "/api/v1/query", url.Values{"query": {promQL}}, &res); err != nil {
		return 0, err
	}
	number := func(v []any) bool {
		if len(v) != 2 {
			return false
		}
		f, err := strconv.ParseFloat(asString(v[1]), 64)
		return err == nil && !math.IsNaN(f)
	}
	switch res.ResultType {
	case "vector":
		var vec []struct{ Value []any }
		if err := json.Unmarshal(res.Result, &vec); err != nil {
			return 0, err
		}
		n := 0
		for _, s := range vec {
			if number(s.Value) {
				n++
			}
		}
		return n, nil
	case "scalar":
		var v []any
		if err := json.Unmarshal(res.Result, &v); err != nil {
			return 0, err
		}
		if number(v) {
			return 1, nil
		}
		return 0, nil
	default:
		return 0, fmt.Errorf("result type %s: a panel query must give an instant vector", res.ResultType)
	}
}

type promAlert struct {
	Labels map[string]string
	State  string
}

func (c *promClient) alerts(ctx context.Context, each func(promAlert)) error {
	var res struct{ Alerts []promAlert }
	if err := c.get(ctx, "/api/v1/alerts", nil, &res); err != nil {
		return err
	}
	for _, a := range res.Alerts {
		each(a)
	}
	return nil
}

// liveProc is a subprocess of the live check, logging to dir/<name>.log.
type liveProc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

// startLiveProc starts exe with args. The StackLens variables of the
// test's own environment are dropped (a developer's .env or exports must
// not leak in); env sets the process's own. It is stopped when the test
// ends, in reverse order of starting.
func startLiveProc(t *testing.T, dir, name, exe string, args []string, env map[string]string) *liveProc {
	t.Helper()
	own := map[string]bool{"ENV_FILE": true}
	for _, v := range config.Vars() {
		own[v.Env], own[v.Env+"_FILE"] = true, true
	}
	var environ []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !own[k] {
			environ = append(environ, kv)
		}
	}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	p := &liveProc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	lf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	p.cmd = exec.Command(exe, args...)
	p.cmd.Dir = dir
	p.cmd.Env = environ
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	// Own process group; SIGTERM if the test process dies.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, p.tail(2000))
		}
	})
	return p
}

// stop interrupts the process and waits up to 30 s, then kills it.
func (p *liveProc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New(p.name + " did not stop within 30s; killed")
	}
}

func (p *liveProc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pollUntil polls cond every 200 ms until it holds; it fails the test
// after timeout, or as soon as p (whose readiness is awaited) exits.
func pollUntil(t *testing.T, ctx context.Context, timeout time.Duration, p *liveProc, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, err, p.tail(2000))
		case <-ctx.Done():
			t.Fatalf("%v: %v", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %v", timeout, err)
		}
	}
}

func httpOK(ctx context.Context, u string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, "GET", u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// freePort returns a loopback TCP port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
