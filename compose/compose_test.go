package compose

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/stacklens/stacklens/internal/config"
)

// Files under test, relative to this directory.
var composeFiles = []string{"docker-compose.yml", "docker-compose.cluster.yml"}

const (
	promConfigFile = "prometheus/prometheus.yml"
	promRulesFile  = "prometheus/alerts.yml"
	dashboardsDir  = "grafana/dashboards"
	datasourcesYML = "grafana/provisioning/datasources/datasources.yml"
	dockerfile     = "Dockerfile"
	nginxConf      = "nginx/nginx.conf"
	runbook        = "../docs/RUNBOOK.md"
)

// ------------------------------------------------------------------ helpers

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, path)), &m); err != nil {
		t.Fatalf("%s: not valid YAML: %v", path, err)
	}
	if m == nil {
		t.Fatalf("%s: empty", path)
	}
	return m
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// interpolate resolves Compose's ${VAR}, ${VAR:-default}, ${VAR-default}
// and $$ the way `docker compose` does when VAR is unset: the documented
// defaults are what a fresh checkout runs with.
var interpRE = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

func interpolate(s string) string {
	return interpRE.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := interpRE.FindStringSubmatch(m)
		return sub[3] // unset: the default, or ""
	})
}

// service is one Compose service with the fields the tests look at.
type service struct {
	file, name string
	raw        map[string]any
	env        map[string]string // interpolated
}

func (s service) String() string { return s.file + ": service " + s.name }

// stacklens reports whether the service runs the StackLens image.
func (s service) stacklens() bool {
	return strings.HasPrefix(asString(s.raw["image"]), "stacklens/")
}

func (s service) command() []string {
	switch c := s.raw["command"].(type) {
	case string:
		return strings.Fields(c)
	case []any:
		out := make([]string, len(c))
		for i, v := range c {
			out[i] = asString(v)
		}
		return out
	}
	return nil
}

// containerPorts are the container sides of `ports:` and `expose:`.
func (s service) containerPorts(t *testing.T) []int {
	t.Helper()
	var out []int
	for _, key := range []string{"ports", "expose"} {
		for _, p := range asList(s.raw[key]) {
			spec := asString(p)
			if m := asMap(p); m != nil {
				spec = asString(m["target"])
			}
			spec = strings.SplitN(spec, "/", 2)[0]
			parts := strings.Split(spec, ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil {
				t.Errorf("%s: cannot read port %q", s, asString(p))
				continue
			}
			out = append(out, n)
		}
	}
	return out
}

func loadServices(t *testing.T, file string) map[string]service {
	t.Helper()
	doc := readYAML(t, file)
	svcs := asMap(doc["services"])
	if len(svcs) == 0 {
		t.Fatalf("%s: no services", file)
	}
	out := map[string]service{}
	for name, v := range svcs {
		raw := asMap(v)
		if raw == nil {
			t.Fatalf("%s: service %s is not a mapping", file, name)
		}
		s := service{file: file, name: name, raw: raw, env: map[string]string{}}
		switch e := raw["environment"].(type) {
		case map[string]any:
			for k, v := range e {
				if k == "<<" {
					t.Fatalf("%s: unresolved merge key in environment", s)
				}
				s.env[k] = interpolate(asString(v))
			}
		case []any:
			for _, kv := range e {
				k, v, _ := strings.Cut(asString(kv), "=")
				s.env[k] = interpolate(v)
			}
		case nil:
		default:
			t.Fatalf("%s: environment has an unexpected form %T", s, e)
		}
		out[name] = s
	}
	return out
}

// ------------------------------------------------------- what the binary has

// binaryCommands reads the subcommands registered in cmd/stacklens: the
// built-in table of main.go (`{"name", "summary", fn}`), `command{"name", …}`
// registrations and roles (`registerRole(role{name: "…"`). For a command
// whose usage line reads `usage: stacklens NAME a|b`, the allowed first
// arguments are recorded too.
func binaryCommands(t *testing.T) (map[string]bool, map[string][]string) {
	t.Helper()
	files, err := filepath.Glob("../cmd/stacklens/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sources in cmd/stacklens: %v", err)
	}
	patterns := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*\{"([a-z][a-z0-9-]*)",\s*"`),
		regexp.MustCompile(`command\{\s*"([a-z][a-z0-9-]*)"`),
		regexp.MustCompile(`command\{\s*name:\s*"([a-z][a-z0-9-]*)"`),
		regexp.MustCompile(`(?s)= role\{\s*name:\s*"([a-z][a-z0-9-]*)"`),
	}
	usageRE := regexp.MustCompile(`usage: stacklens ([a-z][a-z0-9-]*) ([a-z|-]+)`)
	cmds := map[string]bool{}
	subs := map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src := readFile(t, f)
		for _, re := range patterns {
			for _, m := range re.FindAllStringSubmatch(src, -1) {
				cmds[m[1]] = true
			}
		}
		for _, m := range usageRE.FindAllStringSubmatch(src, -1) {
			subs[m[1]] = append(subs[m[1]], strings.Split(m[2], "|")...)
		}
	}
	for _, must := range []string{"version", "migrate"} {
		if !cmds[must] {
			t.Fatalf("command scan found no %q among %v: the registration pattern in cmd/stacklens changed; update binaryCommands", must, keys(cmds))
		}
	}
	return cmds, subs
}

// knownVars are the configuration variables the binary reads: every
// variable of config.Vars(), its NAME_FILE form, and ENV_FILE.
func knownVars() (map[string]config.Var, map[string]bool) {
	vars := map[string]config.Var{}
	names := map[string]bool{"ENV_FILE": true}
	for _, v := range config.Vars() {
		vars[v.Env] = v
		names[v.Env] = true
		names[v.Env+"_FILE"] = true
	}
	return vars, names
}

func defaultOf(t *testing.T, name string) string {
	t.Helper()
	vars, _ := knownVars()
	v, ok := vars[name]
	if !ok {
		t.Fatalf("config has no variable %s", name)
	}
	return v.Default
}

// metricInfo is what the source declares about one metric name.
type metricInfo struct {
	labels     map[string]bool
	histogram  bool // a VictoriaMetrics histogram of some kind
	promBucket bool // …with Prometheus `le` buckets (histogram_quantile works)
}

// standardMetrics are written by VictoriaMetrics/metrics.WritePrometheus(w,
// true) for every process (Go runtime and process metrics), and up, which
// Prometheus adds to every target.
var standardMetrics = []string{
	"up", "scrape_duration_seconds",
	"go_goroutines", "go_threads", "go_gomaxprocs", "go_info", "go_memlimit_bytes",
	"go_gc_duration_seconds", "go_gc_cpu_seconds_total",
	"go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes",
	"go_memstats_next_gc_bytes", "go_memstats_mallocs_total", "go_memstats_frees_total",
	"process_resident_memory_bytes", "process_virtual_memory_bytes",
	"process_cpu_seconds_total", "process_cpu_seconds_user_total", "process_cpu_seconds_system_total",
	"process_open_fds", "process_max_fds", "process_start_time_seconds", "process_num_threads",
	"process_io_read_bytes_total", "process_io_written_bytes_total",
}

// targetLabels are added by Prometheus or by our relabelling.
var targetLabels = map[string]bool{"job": true, "instance": true, "role": true, "stack": true}

var (
	goStringRE    = regexp.MustCompile("\"(?:[^\"\\\\\\n]|\\\\.)*\"|`[^`]*`")
	metricDeclRE  = regexp.MustCompile(`^[\x60"](stacklens_[a-z0-9_]+)(\{.*)?`)
	labelNameRE   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*=`)
	metricSources = []string{"../bridge", "../processor", "../projections", "../api", "../alerting", "../internal"}
)

// declaredMetrics scans the Go sources of the components for string
// literals that start with a metric name (`"stacklens_x_total"`,
// "`stacklens_x{label=…}`"), the way VictoriaMetrics/metrics declares them.
func declaredMetrics(t *testing.T) map[string]*metricInfo {
	t.Helper()
	out := map[string]*metricInfo{}
	add := func(name string) *metricInfo {
		if out[name] == nil {
			out[name] = &metricInfo{labels: map[string]bool{}}
		}
		return out[name]
	}
	for _, root := range metricSources {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src := string(b)
			for _, loc := range goStringRE.FindAllStringIndex(src, -1) {
				lit := src[loc[0]:loc[1]]
				m := metricDeclRE.FindStringSubmatch(lit)
				if m == nil {
					continue
				}
				mi := add(m[1])
				lineStart := strings.LastIndexByte(src[:loc[0]], '\n') + 1
				lineEnd := strings.IndexByte(src[loc[0]:], '\n')
				if lineEnd < 0 {
					lineEnd = len(src) - loc[0]
				}
				line := src[lineStart : loc[0]+lineEnd]
				if m[2] != "" {
					// Labels: `name{a="` + v + `",b="` + w + `"}` spreads them over
					// the literals of the rest of the line.
					labels := m[2]
					for _, l := range goStringRE.FindAllString(src[loc[1]:loc[0]+lineEnd], -1) {
						labels += l
					}
					for _, l := range labelNameRE.FindAllStringSubmatch(labels, -1) {
						mi.labels[l[1]] = true
					}
				}
				if strings.Contains(line, "Histogram") {
					mi.histogram = true
					if strings.Contains(line, "PrometheusHistogram") {
						mi.promBucket = true
					}
				}
			}
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			t.Fatalf("scan %s: %v", root, err)
		}
	}
	// Histograms expose _bucket (le or vmrange), _sum and _count.
	for name, mi := range out {
		if !mi.histogram {
			continue
		}
		for _, suf := range []string{"_sum", "_count"} {
			add(name + suf).labels = mi.labels
		}
		b := add(name + "_bucket")
		b.labels = map[string]bool{}
		for l := range mi.labels {
			b.labels[l] = true
		}
		if mi.promBucket {
			b.labels["le"] = true
		} else {
			b.labels["vmrange"] = true
		}
	}
	for _, name := range standardMetrics {
		add(name)
	}
	if out["stacklens_bridge_forwarded_total"] == nil {
		t.Fatalf("metric scan found no stacklens_bridge_forwarded_total: the declaration style changed; update declaredMetrics")
	}
	return out
}

// ------------------------------------------------------------------ PromQL

var (
	promStringRE  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promIdentRE   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promSelRE     = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	promGroupRE   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promMetricPfx = regexp.MustCompile(`^(stacklens_|go_|process_)`)
)

// checkPromQL returns what is wrong with expr: unbalanced brackets, unknown
// metric names, unknown labels, histogram_quantile over non-`le` buckets.
func checkPromQL(expr string, known map[string]*metricInfo) []string {
	var problems []string
	// Grafana variables are not PromQL.
	e := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h").Replace(expr)
	bare := promStringRE.ReplaceAllString(e, `""`)
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	for _, r := range bare {
		switch r {
		case '(', '{', '[':
			depth[r]++
		case ')', '}', ']':
			depth[pairs[r]]--
			if depth[pairs[r]] < 0 {
				problems = append(problems, "unbalanced "+string(r))
			}
		}
	}
	for r, d := range depth {
		if d != 0 {
			problems = append(problems, "unbalanced "+string(r))
		}
	}
	used := map[string]bool{}
	for _, id := range promIdentRE.FindAllString(bare, -1) {
		if promMetricPfx.MatchString(id) || id == "up" {
			used[id] = true
			if known[id] == nil {
				problems = append(problems, "unknown metric "+id)
			}
		}
	}
	if len(used) == 0 {
		problems = append(problems, "names no metric")
	}
	labelsOf := func(name string) map[string]bool {
		if mi := known[name]; mi != nil {
			return mi.labels
		}
		return nil
	}
	for _, m := range promSelRE.FindAllStringSubmatch(e, -1) {
		name := m[1]
		if !used[name] {
			continue
		}
		for _, l := range labelNameRE.FindAllStringSubmatch(promStringRE.ReplaceAllString(m[2], `""`), -1) {
			if l[1] != "__name__" && !targetLabels[l[1]] && !labelsOf(name)[l[1]] {
				problems = append(problems, fmt.Sprintf("metric %s has no label %q", name, l[1]))
			}
		}
	}
	// Grouping labels must belong to some metric of the expression.
	all := map[string]bool{}
	for name := range used {
		for l := range labelsOf(name) {
			all[l] = true
		}
	}
	for _, m := range promGroupRE.FindAllStringSubmatch(bare, -1) {
		for _, l := range strings.Split(m[1], ",") {
			l = strings.TrimSpace(l)
			if l != "" && !targetLabels[l] && !all[l] {
				problems = append(problems, fmt.Sprintf("grouping label %q is on none of %v", l, keys(used)))
			}
		}
	}
	if strings.Contains(e, "histogram_quantile") {
		for name := range used {
			if strings.HasSuffix(name, "_bucket") && !labelsOf(name)["le"] {
				problems = append(problems, "histogram_quantile over "+name+", which has no Prometheus le buckets (VictoriaMetrics vmrange histogram): use rate(_sum)/rate(_count)")
			}
		}
	}
	return problems
}

// -------------------------------------------------------------------- SQL

// schemaObjects are the tables, views and functions the migrations leave
// (created, under their last name if renamed), and every word of the
// migrations (column names included).
func schemaObjects(t *testing.T) (objects, words map[string]bool) {
	t.Helper()
	files, err := filepath.Glob("../schema/migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	createRE := regexp.MustCompile(`(?i)CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW|MATERIALIZED\s+VIEW|FUNCTION)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)`)
	renameRE := regexp.MustCompile(`(?i)ALTER\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+EXISTS\s+)?([a-z_][a-z0-9_]*)\s+RENAME\s+TO\s+([a-z_][a-z0-9_]*)`)
	wordRE := regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*`)
	objects, words = map[string]bool{}, map[string]bool{}
	for _, f := range files {
		src := readFile(t, f)
		for _, m := range createRE.FindAllStringSubmatch(src, -1) {
			objects[strings.ToLower(m[1])] = true
		}
		for _, m := range renameRE.FindAllStringSubmatch(src, -1) {
			delete(objects, strings.ToLower(m[1]))
			objects[strings.ToLower(m[2])] = true
		}
		for _, w := range wordRE.FindAllString(src, -1) {
			words[strings.ToLower(w)] = true
		}
	}
	return objects, words
}

// PostgreSQL catalogs and functions the dashboards may use besides ours.
var (
	sqlCatalogs = map[string]bool{"pg_stat_activity": true, "pg_stat_database": true, "pg_database": true}
	sqlWords    = map[string]bool{}
)

func init() {
	for _, w := range strings.Fields(`select from where and or not in is null as by group order limit offset desc asc
		case when then else end join left right inner outer full cross on distinct having union all any exists
		between like ilike true false interval filter over partition
		count sum min max avg coalesce nullif round greatest least now current_database extract epoch date_trunc
		timestamptz timestamp text int integer bigint numeric double precision float8 boolean`) {
		sqlWords[w] = true
	}
}

var (
	sqlStringRE   = regexp.MustCompile(`'(?:[^']|'')*'`)
	sqlMacroRE    = regexp.MustCompile(`\$__[a-zA-Z]+`)
	sqlFromRE     = regexp.MustCompile(`(?i)\b(?:from|join)\s+([a-z_][a-z0-9_]*)(?:\s+(?:as\s+)?([a-z_][a-z0-9_]*))?`)
	sqlAliasRE    = regexp.MustCompile(`(?i)\bas\s+"?([a-z_][a-z0-9_]*)"?`)
	sqlCallRE     = regexp.MustCompile(`([a-z_][a-z0-9_]*)\s*\(`)
	sqlWordRE     = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*`)
	sqlOurPrefixe = regexp.MustCompile(`^(analytics_|v_|stacklens_)`)
)

// checkSQL returns what is wrong with a dashboard query: relations and
// functions the schema does not create, words (columns) it never mentions.
func checkSQL(q string, objects, words map[string]bool) []string {
	var problems []string
	s := strings.ToLower(q)
	s = sqlStringRE.ReplaceAllString(s, "''")
	s = sqlMacroRE.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, `"`, "")
	aliases := map[string]bool{}
	for _, m := range sqlAliasRE.FindAllStringSubmatch(s, -1) {
		aliases[m[1]] = true
	}
	for _, m := range sqlFromRE.FindAllStringSubmatch(s, -1) {
		rel := m[1]
		if sqlWords[rel] { // FROM (SELECT …), EXTRACT(epoch FROM …)
			continue
		}
		if !objects[rel] && !sqlCatalogs[rel] {
			problems = append(problems, "unknown relation or function "+rel)
		}
		if m[2] != "" && !sqlWords[m[2]] {
			aliases[m[2]] = true
		}
	}
	for _, m := range sqlCallRE.FindAllStringSubmatch(s, -1) {
		fn := m[1]
		if sqlOurPrefixe.MatchString(fn) && !objects[fn] {
			problems = append(problems, "unknown function "+fn)
		}
		if !sqlOurPrefixe.MatchString(fn) && !sqlWords[fn] && !objects[fn] {
			problems = append(problems, "function "+fn+" is neither ours nor in the test's builtin list")
		}
	}
	for _, w := range sqlWordRE.FindAllString(s, -1) {
		if sqlWords[w] || aliases[w] || objects[w] || sqlCatalogs[w] || words[w] {
			continue
		}
		switch w {
		case "datname", "usename", "state", "pid": // pg_stat_activity columns
			continue
		}
		problems = append(problems, fmt.Sprintf("%q appears nowhere in schema/migrations (column typo?)", w))
	}
	return problems
}

// --------------------------------------------------------------- the tests

// TestComposeFilesParse: both files are YAML with the services the design
// names, and every service has resource limits.
func TestComposeFilesParse(t *testing.T) {
	want := map[string][]string{
		"docker-compose.yml": {"kafka", "kafka-init", "nats", "timescaledb", "migrate", "bridge", "processor",
			"projections", "api", "prometheus", "grafana", "mailpit"},
		"docker-compose.cluster.yml": {"kafka", "kafka-init", "nats-1", "nats-2", "nats-3", "timescaledb", "migrate",
			"bridge", "processor", "projections", "api", "nginx", "prometheus", "grafana", "mailpit"},
	}
	for _, f := range composeFiles {
		svcs := loadServices(t, f)
		for _, name := range want[f] {
			if _, ok := svcs[name]; !ok {
				t.Errorf("%s: no service %s", f, name)
			}
		}
		for _, s := range svcs {
			lim := asMap(asMap(asMap(s.raw["deploy"])["resources"])["limits"])
			if lim["cpus"] == nil || lim["memory"] == nil {
				t.Errorf("%s: no deploy.resources.limits (cpus and memory)", s)
			}
			if s.raw["image"] == nil {
				t.Errorf("%s: no image", s)
			}
			if s.stacklens() {
				b := asMap(s.raw["build"])
				if asString(b["dockerfile"]) != "compose/Dockerfile" || asString(b["context"]) != ".." {
					t.Errorf("%s: build must be context .. with dockerfile compose/Dockerfile, got %v", s, b)
				}
			}
		}
	}
}

// TestCommandsAreRealSubcommands: every stacklens service runs a command
// the binary registers (and a known sub-argument, e.g. migrate up).
func TestCommandsAreRealSubcommands(t *testing.T) {
	cmds, subs := binaryCommands(t)
	roles := map[string]bool{}
	for _, f := range composeFiles {
		for _, s := range loadServices(t, f) {
			if !s.stacklens() {
				continue
			}
			c := s.command()
			if len(c) == 0 {
				t.Errorf("%s: no command (the image's default only prints help)", s)
				continue
			}
			if !cmds[c[0]] {
				t.Errorf("%s: command %q is not a stacklens subcommand (have %v)", s, c[0], keys(cmds))
				continue
			}
			roles[c[0]] = true
			if allowed, ok := subs[c[0]]; ok {
				if len(c) < 2 || !slices.Contains(allowed, c[1]) {
					t.Errorf("%s: %q needs one of %v, got %v", s, c[0], allowed, c[1:])
				}
			}
		}
	}
	for _, r := range []string{"bridge", "processor", "projections", "api", "migrate"} {
		if !roles[r] {
			t.Errorf("no compose service runs `stacklens %s`", r)
		}
	}
}

// TestEnvironmentIsRealConfiguration: every variable set on a stacklens
// service is one the binary reads, and the service's whole environment
// (Compose defaults interpolated) passes the binary's own validation.
func TestEnvironmentIsRealConfiguration(t *testing.T) {
	_, names := knownVars()
	empty := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range composeFiles {
		for _, s := range loadServices(t, f) {
			if !s.stacklens() {
				continue
			}
			if len(s.env) == 0 {
				t.Errorf("%s: no environment", s)
			}
			for k := range s.env {
				if !names[k] {
					t.Errorf("%s: %s is not a StackLens variable (see `stacklens config vars`)", s, k)
				}
			}
			env := s.env
			_, err := config.Load(s.name, nil, config.Options{
				EnvFile:   empty,
				LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			})
			if err != nil {
				t.Errorf("%s: the binary rejects this configuration: %v", s, err)
			}
		}
	}
}

// TestServiceWiring: ports, dependencies, host names and volumes agree
// between the services and with the binary's configuration.
func TestServiceWiring(t *testing.T) {
	metricsDefault := defaultOf(t, "METRICS_PORT")
	for _, f := range composeFiles {
		svcs := loadServices(t, f)
		for _, s := range svcs {
			// depends_on targets exist and can satisfy the condition.
			deps := asMap(s.raw["depends_on"])
			for dep, v := range deps {
				d, ok := svcs[dep]
				if !ok {
					t.Errorf("%s: depends on unknown service %s", s, dep)
					continue
				}
				switch cond := asString(asMap(v)["condition"]); cond {
				case "service_healthy":
					hc := asMap(d.raw["healthcheck"])
					if (hc == nil && !d.stacklens()) || hc["disable"] == true {
						t.Errorf("%s: waits for %s to be healthy, which has no healthcheck", s, dep)
					}
				case "service_completed_successfully":
					if asString(d.raw["restart"]) != "no" {
						t.Errorf("%s: waits for %s to complete, which is not one-shot (restart: \"no\")", s, dep)
					}
				case "service_started":
				default:
					t.Errorf("%s: depends_on %s without a known condition (%q)", s, dep, cond)
				}
			}
			// Bind mounts exist in the repository.
			for _, v := range asList(s.raw["volumes"]) {
				src, _, _ := strings.Cut(asString(v), ":")
				if strings.HasPrefix(src, "./") || strings.HasPrefix(src, "../") {
					if _, err := os.Stat(src); err != nil {
						t.Errorf("%s: mounts %s, which does not exist", s, src)
					}
				}
			}
			if !s.stacklens() {
				continue
			}
			c := s.command()
			long := len(c) > 0 && c[0] != "migrate"
			if long {
				if s.env["METRICS_HOST"] != "0.0.0.0" {
					t.Errorf("%s: METRICS_HOST must be 0.0.0.0 so Prometheus can scrape it, got %q", s, s.env["METRICS_HOST"])
				}
				if p := s.env["METRICS_PORT"]; p != metricsDefault {
					t.Errorf("%s: METRICS_PORT %q differs from %s, which the image's HEALTHCHECK and prometheus.yml assume", s, p, metricsDefault)
				}
			}
			for _, p := range s.containerPorts(t) {
				ps := strconv.Itoa(p)
				if ps != s.env["METRICS_PORT"] && ps != s.env["API_PORT"] {
					t.Errorf("%s: publishes container port %d, which is neither METRICS_PORT nor API_PORT", s, p)
				}
			}
			if c[0] == "api" {
				if s.env["API_PORT"] != defaultOf(t, "API_PORT") {
					t.Errorf("%s: API_PORT %q, the docs and nginx assume %s", s, s.env["API_PORT"], defaultOf(t, "API_PORT"))
				}
				if !slices.Contains(s.containerPorts(t), atoi(t, s.env["API_PORT"])) {
					t.Errorf("%s: does not publish or expose API_PORT %s", s, s.env["API_PORT"])
				}
			}
			// Host names in the configuration are services of this file.
			hosts := map[string]string{"DB_HOST": s.env["DB_HOST"]}
			for i, u := range strings.Split(s.env["NATS_URL"], ",") {
				if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.Hostname() != "" {
					hosts[fmt.Sprintf("NATS_URL[%d]", i)] = pu.Hostname()
				}
			}
			for i, b := range strings.Split(s.env["KAFKA_BOOTSTRAP_SERVERS"], ",") {
				if h, _, ok := strings.Cut(strings.TrimSpace(b), ":"); ok {
					hosts[fmt.Sprintf("KAFKA_BOOTSTRAP_SERVERS[%d]", i)] = h
				}
			}
			for k, h := range hosts {
				if h == "" {
					continue
				}
				if _, ok := svcs[h]; !ok {
					t.Errorf("%s: %s names host %q, which is no service of %s", s, k, h, f)
				}
			}
			if s.env["SMTP_HOST"] != "" {
				if _, ok := svcs[s.env["SMTP_HOST"]]; !ok {
					t.Errorf("%s: SMTP_HOST %q is no service", s, s.env["SMTP_HOST"])
				}
			}
			if s.env["API_HOST"] != "" && s.env["API_HOST"] != "127.0.0.1" && s.env["API_ADMIN_KEYS"] == "" && s.env["API_ADMIN_KEYS_FILE"] == "" {
				t.Errorf("%s: API on %s without admin credentials: the API refuses to start", s, s.env["API_HOST"])
			}
		}
		// Scale and replication as the design says.
		if n := replicas(svcs["processor"]); n != 3 {
			t.Errorf("%s: processor replicas = %d, want 3", f, n)
		}
		// The Kafka init creates the topics the services use, 12 partitions for the input.
		initCmd := strings.Join(svcs["kafka-init"].command(), " ")
		for _, s := range svcs {
			for _, k := range []string{"KAFKA_INPUT_TOPIC", "KAFKA_OUTPUT_TOPIC"} {
				if topic := s.env[k]; s.stacklens() && topic != "" && !strings.Contains(initCmd, topic+":") {
					t.Errorf("%s: %s=%s is not created by kafka-init", s, k, topic)
				}
			}
		}
		if !strings.Contains(initCmd, "stacklens-analytics:12") {
			t.Errorf("%s: kafka-init must create stacklens-analytics with 12 partitions", f)
		}
	}

	// The cluster variant: 3 NATS nodes, replicated streams, API ×2 behind nginx.
	cl := loadServices(t, "docker-compose.cluster.yml")
	for _, name := range []string{"bridge", "processor", "projections", "api"} {
		s := cl[name]
		if s.env["NATS_REPLICAS"] != "3" {
			t.Errorf("%s: NATS_REPLICAS=%q, want 3", s, s.env["NATS_REPLICAS"])
		}
		if n := len(strings.Split(s.env["NATS_URL"], ",")); n != 3 {
			t.Errorf("%s: NATS_URL lists %d servers, want all 3", s, n)
		}
	}
	if n := replicas(cl["api"]); n != 2 {
		t.Errorf("cluster: api replicas = %d, want 2", n)
	}
	ng := readFile(t, nginxConf)
	if m := regexp.MustCompile(`server\s+api:(\d+)`).FindStringSubmatch(ng); m == nil || m[1] != cl["api"].env["API_PORT"] {
		t.Errorf("%s: upstream must be api:%s (API_PORT), got %v", nginxConf, cl["api"].env["API_PORT"], m)
	}
	if !slices.Contains(cl["nginx"].containerPorts(t), atoi(t, cl["api"].env["API_PORT"])) {
		t.Errorf("cluster: nginx does not publish %s", cl["api"].env["API_PORT"])
	}
	if !strings.Contains(ng, "listen "+cl["api"].env["API_PORT"]) {
		t.Errorf("%s: nginx must listen on %s", nginxConf, cl["api"].env["API_PORT"])
	}
}

func replicas(s service) int {
	n, ok := asMap(s.raw["deploy"])["replicas"].(int)
	if !ok {
		return 1
	}
	return n
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// TestDockerfile: static, trimmed, non-root, with a healthcheck on the
// metrics port and link-time variables that exist in package main.
func TestDockerfile(t *testing.T) {
	df := readFile(t, dockerfile)
	gomod := readFile(t, "../go.mod")
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	argVer := regexp.MustCompile(`ARG GO_VERSION=(\S+)`).FindStringSubmatch(df)
	if goVer == nil || argVer == nil || argVer[1] != goVer[1] {
		t.Errorf("Dockerfile GO_VERSION %v must match go.mod's go %v", argVer, goVer)
	}
	for _, want := range []string{"FROM golang:${GO_VERSION} AS build", "CGO_ENABLED=0", "-trimpath", "./cmd/stacklens",
		"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build", "HEALTHCHECK",
		`ENTRYPOINT ["/usr/local/bin/stacklens"]`, "COPY --from=build /out/stacklens /usr/local/bin/stacklens"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
		t.Errorf("the final stage must run as a non-root USER, got %v", users)
	}
	var version string
	for _, f := range []string{"../cmd/stacklens/version.go", "../cmd/stacklens/main.go"} {
		if b, err := os.ReadFile(f); err == nil {
			version += string(b)
		}
	}
	for _, m := range regexp.MustCompile(`-X main\.([A-Za-z_]+)=`).FindAllStringSubmatch(df, -1) {
		if !regexp.MustCompile(`\b` + m[1] + `\s*=`).MatchString(version) {
			t.Errorf("Dockerfile sets main.%s, which cmd/stacklens does not declare", m[1])
		}
	}
	// The healthcheck is either the binary's own subcommand (distroless has
	// no shell or HTTP client) or an HTTP GET of /ready on METRICS_PORT.
	cmds, _ := binaryCommands(t)
	if m := regexp.MustCompile(`CMD \["/usr/local/bin/stacklens", "([a-z-]+)"`).FindStringSubmatch(df); m != nil {
		if !cmds[m[1]] {
			t.Errorf("HEALTHCHECK runs `stacklens %s`, which the binary does not have (have %v)", m[1], keys(cmds))
		}
	} else if m := regexp.MustCompile(`\$\{METRICS_PORT:-(\d+)\}/ready`).FindStringSubmatch(df); m == nil || m[1] != defaultOf(t, "METRICS_PORT") {
		t.Errorf("HEALTHCHECK must run `stacklens healthcheck` or GET /ready on ${METRICS_PORT:-%s}", defaultOf(t, "METRICS_PORT"))
	}
	if strings.Contains(df, "distroless") && strings.Contains(df, "wget") {
		t.Errorf("a distroless image has no wget")
	}
	_, names := knownVars()
	envBlock := regexp.MustCompile(`(?m)^ENV\s+((?:.*\\\n)*.*)$`).FindAllStringSubmatch(df, -1)
	for _, b := range envBlock {
		for _, kv := range regexp.MustCompile(`([A-Z_][A-Z0-9_]*)=`).FindAllStringSubmatch(b[1], -1) {
			if strings.HasPrefix(kv[1], "CGO_") || strings.HasPrefix(kv[1], "GO") {
				continue
			}
			if !names[kv[1]] {
				t.Errorf("Dockerfile ENV %s is not a StackLens variable", kv[1])
			}
		}
	}
	for _, p := range []string{defaultOf(t, "METRICS_PORT"), defaultOf(t, "API_PORT")} {
		if !regexp.MustCompile(`(?m)^EXPOSE .*\b` + p + `\b`).MatchString(df) {
			t.Errorf("Dockerfile does not EXPOSE %s", p)
		}
	}
}

// TestPrometheusScrapesEveryRole: every long-running stacklens service of
// both compose files is discovered by a dns_sd job on its METRICS_PORT.
func TestPrometheusScrapesEveryRole(t *testing.T) {
	cfg := readYAML(t, promConfigFile)
	scraped := map[string]int{} // DNS name → port
	for _, j := range asList(cfg["scrape_configs"]) {
		for _, sd := range asList(asMap(j)["dns_sd_configs"]) {
			for _, n := range asList(asMap(sd)["names"]) {
				scraped[asString(n)] = asMap(sd)["port"].(int)
			}
		}
	}
	rules := asList(cfg["rule_files"])
	if len(rules) != 1 || asString(rules[0]) != "/etc/prometheus/alerts.yml" {
		t.Errorf("%s: rule_files = %v, want the mounted /etc/prometheus/alerts.yml", promConfigFile, rules)
	}
	for _, f := range composeFiles {
		svcs := loadServices(t, f)
		for _, s := range svcs {
			c := s.command()
			if !s.stacklens() || len(c) == 0 || c[0] == "migrate" {
				continue
			}
			port, ok := scraped[s.name]
			if !ok {
				t.Errorf("%s: not scraped by %s", s, promConfigFile)
				continue
			}
			if strconv.Itoa(port) != s.env["METRICS_PORT"] {
				t.Errorf("%s: scraped on port %d but METRICS_PORT is %s", s, port, s.env["METRICS_PORT"])
			}
		}
		for name := range scraped {
			if _, ok := svcs[name]; !ok {
				t.Errorf("%s scrapes %q, which is no service of %s", promConfigFile, name, f)
			}
		}
		prom := svcs["prometheus"]
		mounted := strings.Join(func() []string {
			var out []string
			for _, v := range asList(prom.raw["volumes"]) {
				out = append(out, asString(v))
			}
			return out
		}(), " ")
		for _, want := range []string{"./" + promConfigFile + ":/etc/prometheus/prometheus.yml", "./" + promRulesFile + ":/etc/prometheus/alerts.yml"} {
			if !strings.Contains(mounted, want) {
				t.Errorf("%s: prometheus does not mount %s", f, want)
			}
		}
	}
}

// TestAlertRules: every rule is complete, names only metrics and labels the
// code declares, and links to a section of docs/RUNBOOK.md that exists.
func TestAlertRules(t *testing.T) {
	known := declaredMetrics(t)
	doc := readYAML(t, promRulesFile)
	anchors := markdownAnchors(t, runbook)
	seen := map[string]bool{}
	n := 0
	for _, g := range asList(doc["groups"]) {
		for _, r := range asList(asMap(g)["rules"]) {
			rule := asMap(r)
			name := asString(rule["alert"])
			n++
			if name == "" || seen[name] {
				t.Errorf("rule %d: missing or duplicate alert name %q", n, name)
			}
			seen[name] = true
			if sev := asString(asMap(rule["labels"])["severity"]); sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", name, sev)
			}
			ann := asMap(rule["annotations"])
			if asString(ann["summary"]) == "" {
				t.Errorf("%s: no summary", name)
			}
			if rb := asString(ann["runbook"]); rb != "" {
				file, anchor, _ := strings.Cut(rb, "#")
				if file != "docs/RUNBOOK.md" || !anchors[anchor] {
					t.Errorf("%s: runbook %q is not a section of docs/RUNBOOK.md", name, rb)
				}
			} else {
				t.Errorf("%s: no runbook annotation", name)
			}
			for _, p := range checkPromQL(asString(rule["expr"]), known) {
				t.Errorf("%s: %s", name, p)
			}
		}
	}
	for _, must := range []string{"StackLensTargetDown", "StackLensBridgeLagHigh", "StackLensDeadLetterRateHigh",
		"StackLensNoDataForwarded", "StackLensProcessorLagHigh", "StackLensProjectionsDBErrors", "StackLensAlertDeliveryFailing"} {
		if !seen[must] {
			t.Errorf("%s: no rule %s", promRulesFile, must)
		}
	}
}

// markdownAnchors are the GitHub anchors of a Markdown file's headings.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	for _, line := range strings.Split(readFile(t, path), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ToLower(drop.ReplaceAllString(h, ""))
		a = strings.ReplaceAll(a, " ", "-")
		out[a] = true
	}
	return out
}

// TestGrafanaDashboards: the three dashboards are valid JSON, use the
// provisioned data sources, and their queries name only metrics the code
// declares and relations, functions and columns the migrations create.
func TestGrafanaDashboards(t *testing.T) {
	known := declaredMetrics(t)
	objects, words := schemaObjects(t)

	dsDoc := readYAML(t, datasourcesYML)
	dsTypes := map[string]string{}
	for _, d := range asList(dsDoc["datasources"]) {
		dsTypes[asString(asMap(d)["uid"])] = asString(asMap(d)["type"])
	}

	files, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	sort.Strings(files)
	titles := map[string]bool{}
	uids := map[string]string{}
	for _, f := range files {
		var d map[string]any
		if err := json.Unmarshal([]byte(readFile(t, f)), &d); err != nil {
			t.Errorf("%s: not valid JSON: %v", f, err)
			continue
		}
		uid := asString(d["uid"])
		if uid == "" || uids[uid] != "" {
			t.Errorf("%s: missing or duplicate uid %q", f, uid)
		}
		uids[uid] = f
		titles[asString(d["title"])] = true
		ids := map[float64]bool{}
		queries := 0
		var walk func(panels []any)
		walk = func(panels []any) {
			for _, p := range panels {
				pm := asMap(p)
				title := fmt.Sprintf("%s: panel %q", f, asString(pm["title"]))
				id, _ := pm["id"].(float64)
				if ids[id] {
					t.Errorf("%s: duplicate panel id %v", title, id)
				}
				ids[id] = true
				walk(asList(pm["panels"]))
				if asString(pm["type"]) == "row" {
					continue
				}
				if gp := asMap(pm["gridPos"]); gp["w"] == nil || gp["h"] == nil {
					t.Errorf("%s: no gridPos", title)
				}
				targets := asList(pm["targets"])
				if len(targets) == 0 {
					t.Errorf("%s: no queries", title)
				}
				for _, tg := range targets {
					tm := asMap(tg)
					ds := asMap(tm["datasource"])
					if ds == nil {
						ds = asMap(pm["datasource"])
					}
					typ, ok := dsTypes[asString(ds["uid"])]
					if !ok || typ != asString(ds["type"]) {
						t.Errorf("%s: data source %v is not provisioned in %s", title, ds, datasourcesYML)
						continue
					}
					queries++
					switch typ {
					case "prometheus":
						for _, p := range checkPromQL(asString(tm["expr"]), known) {
							t.Errorf("%s: PromQL %q: %s", title, asString(tm["expr"]), p)
						}
					case "grafana-postgresql-datasource", "postgres":
						q := asString(tm["rawSql"])
						if q == "" {
							t.Errorf("%s: empty SQL", title)
						}
						for _, p := range checkSQL(q, objects, words) {
							t.Errorf("%s: SQL %q: %s", title, q, p)
						}
					default:
						t.Errorf("%s: unexpected data source type %s", title, typ)
					}
				}
			}
		}
		walk(asList(d["panels"]))
		if queries == 0 {
			t.Errorf("%s: no queries", f)
		}
	}
	for _, want := range []string{"StackLens — Overview", "StackLens — Health", "StackLens — Alerts"} {
		if !titles[want] {
			t.Errorf("no dashboard %q in %s", want, dashboardsDir)
		}
	}
	// The seed's panels, by the objects they must query.
	all := ""
	for _, f := range files {
		all += readFile(t, f)
	}
	for _, must := range []string{"v_service_health_current", "v_top_error_services", "v_top_latency_services",
		"v_active_alerts", "analytics_get_alert_stats", "pg_stat_activity", "stacklens_processor_flush_seconds_bucket",
		"stacklens_projections_rows_upserted_total"} {
		if !strings.Contains(all, must) {
			t.Errorf("dashboards do not use %s", must)
		}
	}
}

// TestCheckersCatchMistakes: the PromQL and SQL checkers reject the
// mistakes they exist for (so a green run means something).
func TestCheckersCatchMistakes(t *testing.T) {
	known := declaredMetrics(t)
	objects, words := schemaObjects(t)
	bad := map[string]string{
		`sum(rate(stacklens_bridge_forwarded_totl[5m]))`:                                                "unknown metric",
		`sum by (shard) (stacklens_bridge_kafka_lag)`:                                                   "grouping label",
		`stacklens_bridge_kafka_lag{partiton="1"}`:                                                      "no label",
		`sum(rate(stacklens_bridge_forwarded_total[5m])`:                                                "unbalanced",
		`histogram_quantile(0.9, sum by (le) (rate(stacklens_bridge_publish_seconds_bucket[5m])))) > 1`: "unbalanced",
	}
	for expr, want := range bad {
		ps := checkPromQL(expr, known)
		if !strings.Contains(strings.Join(ps, "; "), want) {
			t.Errorf("checkPromQL(%q) = %v, want a %q problem", expr, ps, want)
		}
	}
	if ps := checkPromQL(`sum by (partition) (stacklens_bridge_kafka_lag{job="stacklens-bridge"})`, known); len(ps) != 0 {
		t.Errorf("checkPromQL rejects a good expression: %v", ps)
	}
	badSQL := map[string]string{
		`SELECT count(*) FROM v_active_alert`:                            "unknown relation",
		`SELECT servce, status FROM v_service_health_current`:            "servce",
		`SELECT * FROM analytics_get_alert_statz(now(), now())`:          "unknown",
		`SELECT severity FROM analytics_alerts WHERE $__timeFilter(fir)`: "fir",
	}
	for q, want := range badSQL {
		ps := checkSQL(q, objects, words)
		if !strings.Contains(strings.Join(ps, "; "), want) {
			t.Errorf("checkSQL(%q) = %v, want a %q problem", q, ps, want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDocLinks: links from the runbook and the architecture page to
// sections of our own documents land on headings that exist. Links to
// documents not written yet are skipped.
func TestDocLinks(t *testing.T) {
	linkRE := regexp.MustCompile(`\]\(([A-Za-z0-9_./-]*\.md)?#([a-z0-9-]+)\)`)
	for _, doc := range []string{"../docs/RUNBOOK.md", "../docs/ARCHITECTURE.md"} {
		src := readFile(t, doc)
		for _, m := range linkRE.FindAllStringSubmatch(src, -1) {
			target := doc
			if m[1] != "" {
				target = filepath.Join(filepath.Dir(doc), m[1])
			}
			if _, err := os.Stat(target); err != nil {
				continue
			}
			if !markdownAnchors(t, target)[m[2]] {
				t.Errorf("%s: link %s#%s: no such heading", doc, m[1], m[2])
			}
		}
	}
}
