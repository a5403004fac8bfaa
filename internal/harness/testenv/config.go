package testenv

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stacklens/stacklens/internal/config"
)

// Config loads the configuration from env alone (no .env file, no process
// environment) on top of the defaults, failing the test on a bad value.
func Config(t testing.TB, env map[string]string) *config.Config {
	t.Helper()
	l, err := config.Load("test", nil, config.Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		EnvFile:   os.DevNull,
		Output:    io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l.Config
}

// Environ is the process environment as a map: what a helper subprocess
// (a re-executed test binary) was started with.
func Environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
