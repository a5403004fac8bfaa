package compose

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// grafanaBuiltins are the variables Grafana itself defines: the global
// ones and the macros of the PostgreSQL data source. Data links may also
// use ${__field.*}, ${__series.*}, ${__value.*}, ${__data.*} (see
// grafanaVarOK).
var grafanaBuiltins = map[string]bool{
	"__interval": true, "__interval_ms": true, "__rate_interval": true, "__rate_interval_ms": true,
	"__range": true, "__range_s": true, "__range_ms": true, "__from": true, "__to": true, "timeFilter": true,
	"__dashboard": true, "__org": true, "__user": true, "__timezone": true, "__name": true,
	"__timeFilter": true, "__timeFrom": true, "__timeTo": true, "__timeGroup": true, "__timeGroupAlias": true,
	"__unixEpochFilter": true, "__unixEpochFrom": true, "__unixEpochTo": true, "__unixEpochGroup": true,
	"__unixEpochGroupAlias": true, "__unixEpochNanoFilter": true, "__unixEpochNanoFrom": true, "__unixEpochNanoTo": true,
	"__timeEpoch": true, "__schema": true, "__table": true, "__column": true,
}

// Grafana's variable syntaxes: $var, ${var}, ${var:format}, [[var]].
var grafanaVarRE = regexp.MustCompile(`\$\{([A-Za-z0-9_.]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_.]+)(?::[^\]]*)?\]\]`)

// Special data sources of Grafana, valid without provisioning.
var grafanaSpecialDS = map[string]bool{"-- Grafana --": true, "-- Mixed --": true, "-- Dashboard --": true, "grafana": true}

// dashboardRefProblems lists what in one dashboard does not resolve: a
// data source (panel, query, annotation or variable) that is not
// provisioned with that uid and type, a variable that is neither defined
// by the dashboard nor built into Grafana, a link to a dashboard uid that
// is not shipped.
func dashboardRefProblems(d map[string]any, dsTypes map[string]string, dashUIDs map[string]bool) []string {
	var problems []string
	vars := map[string]string{} // name → type
	for _, v := range asList(asMap(d["templating"])["list"]) {
		vars[asString(asMap(v)["name"])] = asString(asMap(v)["type"])
	}
	varOK := func(name string) bool {
		if grafanaBuiltins[name] || vars[name] != "" {
			return true
		}
		for _, p := range []string{"__field.", "__series.", "__value.", "__data.", "__cell"} {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	checkDS := func(where string, ds any) {
		switch x := ds.(type) {
		case nil:
			return // the default data source, or the panel's
		case string:
			// Old style: the data source's name, or a variable.
			if m := grafanaVarRE.FindStringSubmatch(x); m != nil {
				if name := m[1] + m[2] + m[3]; vars[name] != "datasource" {
					problems = append(problems, fmt.Sprintf("%s: data source %q is no datasource variable of the dashboard", where, x))
				}
				return
			}
			if !grafanaSpecialDS[x] {
				problems = append(problems, fmt.Sprintf("%s: data source given by name %q: give {type, uid} of a provisioned one", where, x))
			}
		case map[string]any:
			uid, typ := asString(x["uid"]), asString(x["type"])
			if m := grafanaVarRE.FindStringSubmatch(uid); m != nil {
				if name := m[1] + m[2] + m[3]; vars[name] != "datasource" {
					problems = append(problems, fmt.Sprintf("%s: data source uid %q is no datasource variable of the dashboard", where, uid))
				}
				return
			}
			if grafanaSpecialDS[uid] {
				return
			}
			if want, ok := dsTypes[uid]; !ok {
				problems = append(problems, fmt.Sprintf("%s: data source uid %q is not provisioned in %s (have %v)", where, uid, datasourcesYML, keys(dsTypes)))
			} else if typ != "" && typ != want {
				problems = append(problems, fmt.Sprintf("%s: data source %q has type %q, provisioned as %q", where, uid, typ, want))
			}
		default:
			problems = append(problems, fmt.Sprintf("%s: data source of unexpected form %v", where, ds))
		}
	}
	// Every string anywhere under v: variables must resolve.
	var checkVars func(where string, v any)
	checkVars = func(where string, v any) {
		switch x := v.(type) {
		case string:
			for _, m := range grafanaVarRE.FindAllStringSubmatch(x, -1) {
				if name := m[1] + m[2] + m[3]; !varOK(name) {
					problems = append(problems, fmt.Sprintf("%s: variable %s is not defined (templating has %v)", where, m[0], keys(vars)))
				}
			}
		case map[string]any:
			for _, k := range keys(x) {
				checkVars(where, x[k])
			}
		case []any:
			for _, e := range x {
				checkVars(where, e)
			}
		}
	}
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			pm := asMap(p)
			where := fmt.Sprintf("panel %v %q", pm["id"], asString(pm["title"]))
			walk(asList(pm["panels"]))
			checkDS(where, pm["datasource"])
			for _, tg := range asList(pm["targets"]) {
				checkDS(fmt.Sprintf("%s query %s", where, asString(asMap(tg)["refId"])), asMap(tg)["datasource"])
			}
			// Nested panels are checked by their own walk.
			rest := map[string]any{}
			for k, v := range pm {
				if k != "panels" {
					rest[k] = v
				}
			}
			checkVars(where, rest)
		}
	}
	walk(asList(d["panels"]))
	for _, a := range asList(asMap(d["annotations"])["list"]) {
		where := fmt.Sprintf("annotation %q", asString(asMap(a)["name"]))
		checkDS(where, asMap(a)["datasource"])
		checkVars(where, a)
	}
	for _, v := range asList(asMap(d["templating"])["list"]) {
		where := fmt.Sprintf("variable %q", asString(asMap(v)["name"]))
		checkDS(where, asMap(v)["datasource"])
		checkVars(where, asMap(v)["query"])
	}
	for _, l := range asList(d["links"]) {
		url := asString(asMap(l)["url"])
		checkVars("dashboard link", url)
		if m := regexp.MustCompile(`^/d/([^/?#]+)`).FindStringSubmatch(url); m != nil && !dashUIDs[m[1]] {
			problems = append(problems, fmt.Sprintf("dashboard link %q: no shipped dashboard has uid %q", url, m[1]))
		}
	}
	return problems
}

// provisionedDatasources reads uid → type from datasources.yml.
func provisionedDatasources(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range asList(readYAML(t, datasourcesYML)["datasources"]) {
		uid, typ := asString(asMap(d)["uid"]), asString(asMap(d)["type"])
		if uid == "" || typ == "" {
			t.Fatalf("%s: a data source without uid or type: %v", datasourcesYML, d)
		}
		out[uid] = typ
	}
	return out
}

// TestGrafanaReferencesResolve: every data source (uid and type) of every
// panel, query, annotation and variable of the shipped dashboards is one
// provisioned in datasources.yml, and every $var / ${var} / [[var]] they
// use is defined by the dashboard's templating list or built into
// Grafana; dashboard links point at shipped dashboards.
func TestGrafanaReferencesResolve(t *testing.T) {
	dsTypes := provisionedDatasources(t)
	files, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dashboardsDir)
	}
	dashes := map[string]map[string]any{}
	uids := map[string]bool{}
	for _, f := range files {
		var d map[string]any
		if err := json.Unmarshal([]byte(readFile(t, f)), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		dashes[f] = d
		uids[asString(d["uid"])] = true
	}
	used := map[string]bool{}
	for _, f := range files {
		for _, p := range dashboardRefProblems(dashes[f], dsTypes, uids) {
			t.Errorf("%s: %s", f, p)
		}
		for _, m := range regexp.MustCompile(`"uid":\s*"(stacklens-[a-z]+)"`).FindAllStringSubmatch(readFile(t, f), -1) {
			used[m[1]] = true
		}
	}
	for uid := range dsTypes {
		if !used[uid] {
			t.Errorf("%s provisions %q, which no dashboard uses", datasourcesYML, uid)
		}
	}

	// The checker finds what it exists for.
	bad := map[string]any{
		"templating": map[string]any{"list": []any{map[string]any{"name": "job", "type": "query"}}},
		"links":      []any{map[string]any{"url": "/d/stacklens-nope"}},
		"panels": []any{map[string]any{
			"id": 1.0, "title": "broken", "datasource": map[string]any{"type": "prometheus", "uid": "prometheus-typo"},
			"targets": []any{
				map[string]any{"refId": "A", "expr": `up{job="$job", instance="${instance}"}[$__rate_interval]`,
					"datasource": map[string]any{"type": "loki", "uid": "stacklens-prometheus"}},
				map[string]any{"refId": "B", "datasource": "${DS_PROMETHEUS}"},
			},
		}},
	}
	got := strings.Join(dashboardRefProblems(bad, dsTypes, uids), "\n")
	for _, want := range []string{`uid "prometheus-typo" is not provisioned`, `has type "loki"`, "variable ${instance} is not defined",
		`"${DS_PROMETHEUS}" is no datasource variable`, `no shipped dashboard has uid "stacklens-nope"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the checker missed %q; it found:\n%s", want, got)
		}
	}
	if strings.Contains(got, "$job") || strings.Contains(got, "__rate_interval") {
		t.Errorf("the checker rejects a defined or built-in variable:\n%s", got)
	}
}
