// Package harness_test checks the module's layering, docs/ARCHITECTURE.md
// §11: cmd → stages → plumbing and schema, with the harness wing apart.
package harness_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/stacklens/stacklens"

// stages are the pipeline's components; none may import another.
var stages = map[string]bool{"bridge": true, "processor": true, "projections": true, "api": true, "alerting": true}

// kind classifies a package path (relative to the module).
func kind(p string) string {
	switch {
	case p == "cmd/stacklens":
		return "cmd"
	case strings.HasPrefix(p, "internal/harness/"):
		return "harness"
	case strings.HasPrefix(p, "internal/") || p == "schema":
		return "plumbing"
	case stages[strings.SplitN(p, "/", 2)[0]]:
		return "stage"
	}
	return "other"
}

// allowed reports whether non-test code of from may import to.
func allowed(from, to string) bool {
	kf, kt := kind(from), kind(to)
	switch kf {
	case "cmd", "harness":
		return true // they run the product
	case "stage":
		// A stage's own sub-packages (api/dashboard) belong to it.
		same := strings.SplitN(from, "/", 2)[0] == strings.SplitN(to, "/", 2)[0]
		return kt == "plumbing" || same
	case "plumbing":
		return kt == "plumbing"
	}
	return kt == "plumbing"
}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		from := strings.TrimPrefix(strings.TrimPrefix(f[0], module), "/")
		pkgs++
		if kind(from) == "other" && from != "compose" {
			t.Errorf("package %s has no place in the layout (docs/ARCHITECTURE.md §11)", from)
		}
		for _, imp := range f[1:] {
			to, ok := strings.CutPrefix(imp, module+"/")
			if ok && !allowed(from, to) {
				t.Errorf("%s (%s) imports %s (%s): against docs/ARCHITECTURE.md §11", from, kind(from), to, kind(to))
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("go list saw %d packages; the module has more", pkgs)
	}
}

// TestLayeringRules pins the rule itself, so that loosening it is a
// visible change.
func TestLayeringRules(t *testing.T) {
	for _, c := range []struct {
		from, to string
		ok       bool
	}{
		{"bridge", "internal/natsutil", true},
		{"api/dashboard", "api", true},
		{"api", "alerting", false},
		{"processor", "bridge", false},
		{"bridge", "internal/harness/testenv", false},
		{"internal/config", "api", false},
		{"internal/natsutil", "internal/harness/testenv", false},
		{"schema", "internal/embedded", true},
		{"internal/harness/bench", "api", true},
		{"cmd/stacklens", "internal/harness/devstack", true},
	} {
		if got := allowed(c.from, c.to); got != c.ok {
			t.Errorf("allowed(%s → %s) = %v, want %v", c.from, c.to, got, c.ok)
		}
	}
}
