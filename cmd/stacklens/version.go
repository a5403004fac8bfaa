package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time: go build -ldflags "-X main.version=v1.2.3 -X main.gitCommit=abc123".
var (
	version   = "dev"
	gitCommit = ""
)

// commit is the build's VCS revision: the linker value, else what the Go
// toolchain stamped, else "unknown".
func commit() string {
	if gitCommit != "" {
		return gitCommit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func cmdVersion(_ context.Context, c *cli) int {
	fmt.Fprintf(c.stdout, "stacklens %s (commit %s, %s, %s/%s)\n", version, commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
