package compose

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// promRuleTests is promtool's unit-test file for every rule of alerts.yml.
const promRuleTests = "prometheus/alerts_test.yml"

// prometheusTool returns the path of a Prometheus binary (promtool or
// prometheus; Debian's `prometheus` package ships both). Missing, it skips
// the test, or fails it under CI, where .ci/run installs the package.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (apt-get install prometheus): %v", name, err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// promtool runs promtool with args in dir and returns its combined output.
func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prometheusTool(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPromtoolCheckConfig runs `promtool check config` on the shipped
// prometheus.yml. Its rule file is the path Compose mounts it at
// (/etc/prometheus/alerts.yml), so the file itself is checked with
// --syntax-only, and a copy whose rule_files names the alerts.yml of this
// directory is checked in full (rule files loaded and linted).
func TestPromtoolCheckConfig(t *testing.T) {
	abs, err := filepath.Abs(promConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := promtool(t, ".", "check", "config", "--syntax-only", abs); err != nil {
		t.Errorf("promtool check config --syntax-only %s: %v\n%s", promConfigFile, err, out)
	}
	rules, err := filepath.Abs(promRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	src := readFile(t, promConfigFile)
	const mounted = "/etc/prometheus/alerts.yml"
	if !strings.Contains(src, mounted) {
		t.Fatalf("%s does not load %s", promConfigFile, mounted)
	}
	cp := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cp, []byte(strings.ReplaceAll(src, mounted, rules)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := promtool(t, ".", "check", "config", "--lint=all", "--lint-fatal", cp)
	if err != nil {
		t.Errorf("promtool check config (rule_files → %s): %v\n%s", promRulesFile, err, out)
	}
	if !strings.Contains(out, "SUCCESS: 1 rule files found") {
		t.Errorf("promtool did not load the rule file:\n%s", out)
	}
}

// TestPromtoolCheckRules runs `promtool check rules` (with every lint) on
// alerts.yml.
func TestPromtoolCheckRules(t *testing.T) {
	out, err := promtool(t, ".", "check", "rules", "--lint=all", "--lint-fatal", promRulesFile)
	if err != nil {
		t.Errorf("promtool check rules %s: %v\n%s", promRulesFile, err, out)
	}
	if n := len(alertRules(t)); !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", n)) {
		t.Errorf("promtool did not find the %d rules of %s:\n%s", n, promRulesFile, out)
	}
}

// alertRule is one rule of alerts.yml.
type alertRule struct {
	Alert, Record, Expr, For string
	Labels, Annotations      map[string]string
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var doc struct {
		Groups []struct {
			Name  string
			Rules []alertRule
		}
	}
	if err := yaml.Unmarshal([]byte(readFile(t, promRulesFile)), &doc); err != nil {
		t.Fatalf("%s: %v", promRulesFile, err)
	}
	var out []alertRule
	for _, g := range doc.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", promRulesFile)
	}
	return out
}

// TestPromtoolRuleUnitTests runs promtool's unit tests of the rules
// (prometheus/alerts_test.yml) and requires one for every alerting rule:
// a rule nobody tests fails the suite.
func TestPromtoolRuleUnitTests(t *testing.T) {
	var doc struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name           string
			AlertRuleTests []struct {
				Alertname string
				EvalTime  string `yaml:"eval_time"`
				ExpAlerts []struct {
					ExpLabels      map[string]string `yaml:"exp_labels"`
					ExpAnnotations map[string]string `yaml:"exp_annotations"`
				} `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	if err := yaml.Unmarshal([]byte(readFile(t, promRuleTests)), &doc); err != nil {
		t.Fatalf("%s: %v", promRuleTests, err)
	}
	if len(doc.RuleFiles) != 1 || doc.RuleFiles[0] != filepath.Base(promRulesFile) {
		t.Errorf("%s: rule_files = %v, want [%s] (the shipped file, next to it)", promRuleTests, doc.RuleFiles, filepath.Base(promRulesFile))
	}
	// Which rules are tested, and which are tested firing with their
	// runbook link.
	tested, fired := map[string]bool{}, map[string]bool{}
	for _, tc := range doc.Tests {
		for _, at := range tc.AlertRuleTests {
			tested[at.Alertname] = true
			for _, a := range at.ExpAlerts {
				if a.ExpAnnotations["runbook"] != "" {
					fired[at.Alertname] = true
				}
			}
		}
	}
	rules := alertRules(t)
	names := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			continue // a recording rule: promtool's promql_expr_test covers those
		}
		names[r.Alert] = true
		if !tested[r.Alert] {
			t.Errorf("%s: rule %s has no alert_rule_test in %s", promRulesFile, r.Alert, promRuleTests)
		} else if !fired[r.Alert] {
			t.Errorf("%s: no test of %s expects it to fire with its annotations (runbook included)", promRuleTests, r.Alert)
		}
	}
	for name := range tested {
		if !names[name] {
			t.Errorf("%s tests %s, which is no rule of %s", promRuleTests, name, promRulesFile)
		}
	}
	out, err := promtool(t, filepath.Dir(promRuleTests), "test", "rules", filepath.Base(promRuleTests))
	if err != nil {
		t.Errorf("promtool test rules %s: %v\n%s", promRuleTests, err, out)
	} else if !regexp.MustCompile(`SUCCESS`).MatchString(out) {
		t.Errorf("promtool test rules: no SUCCESS in\n%s", out)
	} else {
		t.Logf("%d rules, all with unit tests; promtool: %s", len(names), strings.TrimSpace(out))
	}
}
