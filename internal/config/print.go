package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Value returns the effective value of the variable env as text, with
// secrets masked when mask is set.
func (l *Loaded) Value(env string, mask bool) string {
	for _, v := range Vars() {
		if v.Env == env {
			return l.format(v, mask)
		}
	}
	return ""
}

func (l *Loaded) format(v Var, mask bool) string {
	fv := reflect.ValueOf(l.Config).Elem().FieldByName(v.Section).FieldByIndex(v.field.Index)
	var s string
	switch {
	case fv.Type() == durationType:
		s = time.Duration(fv.Int()).String()
	case fv.Kind() == reflect.String:
		s = fv.String()
	case fv.Kind() == reflect.Int:
		s = strconv.FormatInt(fv.Int(), 10)
	case fv.Kind() == reflect.Bool:
		s = strconv.FormatBool(fv.Bool())
	case fv.Kind() == reflect.Slice:
		s = strings.Join(fv.Interface().([]string), ",")
	}
	if mask && v.Secret && s != "" {
		return "****"
	}
	return s
}

// Print writes the effective configuration as NAME=value lines grouped by
// section, secrets masked, each with where its value came from.
func (l *Loaded) Print(w io.Writer) {
	section := ""
	for _, v := range Vars() {
		if v.Section != section {
			if section != "" {
				fmt.Fprintln(w)
			}
			section = v.Section
			fmt.Fprintf(w, "# %s\n", section)
		}
		fmt.Fprintf(w, "%s=%s", v.Env, l.format(v, true))
		if src := l.Sources[v.Env]; src != SourceDefault {
			fmt.Fprintf(w, "  # %s", src)
		}
		fmt.Fprintln(w)
	}
}

// WriteReference writes the Markdown table of every variable (the body of
// docs/CONFIGURATION.md).
func WriteReference(w io.Writer) {
	section := ""
	for _, v := range Vars() {
		if v.Section != section {
			section = v.Section
			fmt.Fprintf(w, "\n### %s\n\n| Variable | Flag | Default | Description |\n|---|---|---|---|\n", section)
		}
		def := v.Default
		if def == "" {
			def = "—"
		} else {
			def = "`" + def + "`"
		}
		desc := v.Desc
		if v.Secret {
			desc += " (secret: masked in output, may come from `" + v.Env + "_FILE`)"
		}
		fmt.Fprintf(w, "| `%s` | `--%s` | %s | %s |\n", v.Env, v.Flag, def, desc)
	}
}
