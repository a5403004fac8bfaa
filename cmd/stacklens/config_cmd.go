package main

import (
	"context"
	"fmt"

	"github.com/stacklens/stacklens/internal/config"
)

func cmdConfig(_ context.Context, c *cli) int {
	if len(c.args) == 0 {
		fmt.Fprintln(c.stderr, "usage: stacklens config check [flags] | stacklens config vars")
		return exitConfig
	}
	switch c.args[0] {
	case "check":
		sub := *c
		sub.args = c.args[1:]
		cfg, code := loadConfig(&sub, "config check", "validate the configuration and print it", nil)
		if cfg == nil {
			return code
		}
		cfg.Print(c.stdout)
		fmt.Fprintln(c.stderr, "configuration OK")
		return exitOK
	case "vars":
		fmt.Fprintln(c.stdout, "# StackLens configuration variables")
		config.WriteReference(c.stdout)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "stacklens config: unknown subcommand %q (check or vars)\n", c.args[0])
	return exitConfig
}
