package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
)

// Error is a configuration error. Its message is one line that names the
// variable, never its (possibly secret) value unless the value is harmless.
type Error struct {
	Var string // the environment variable, e.g. DB_PORT
	Msg string
}

func (e *Error) Error() string { return "config: " + e.Var + ": " + e.Msg }

// Source says where a setting's value came from.
type Source string

// Sources of a value, weakest first.
const (
	SourceDefault Source = "default"
	SourceEnvFile Source = "env-file"
	SourceEnv     Source = "env"
	SourceFile    Source = "file" // NAME_FILE
	SourceFlag    Source = "flag"
)

// Var describes one configuration variable.
type Var struct {
	Env     string
	Flag    string
	Default string
	Desc    string
	Secret  bool
	Section string

	field reflect.StructField
}

// Options say where Load reads from; the zero value reads the process
// environment and ./.env when it exists.
type Options struct {
	// LookupEnv replaces os.LookupEnv (tests).
	LookupEnv func(string) (string, bool)
	// EnvFile is the .env file to read; "" means ".env" if present.
	// The ENV_FILE variable and the --env-file flag override it.
	EnvFile string
	// Usage is printed by -h; nil prints the flag defaults.
	Usage func(fs *flag.FlagSet)
	// Output receives flag errors and usage (default os.Stderr).
	Output io.Writer
	// Flags registers a command's own flags next to the variables'.
	Flags func(fs *flag.FlagSet)
}

// Loaded is a configuration with the provenance of each value.
type Loaded struct {
	*Config
	Sources map[string]Source
	Args    []string // arguments left after the flags
}

// ErrHelp is returned when -h or --help was given; usage was printed.
var ErrHelp = flag.ErrHelp

// Vars lists every variable in declaration order.
func Vars() []Var {
	var out []Var
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		sec := t.Field(i)
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			env := f.Tag.Get("env")
			if env == "" {
				continue
			}
			out = append(out, Var{
				Env:     env,
				Flag:    flagName(env),
				Default: f.Tag.Get("default"),
				Desc:    f.Tag.Get("desc"),
				Secret:  f.Tag.Get("secret") == "true",
				Section: sec.Name,
				field:   f,
			})
		}
	}
	return out
}

func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

// Load builds the configuration from defaults, the .env file, the
// environment, NAME_FILE secrets and flags in args (strongest last), then
// validates it. Errors are *Error, or ErrHelp.
func Load(name string, args []string, opts Options) (*Loaded, error) {
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	out := opts.Output
	if out == nil {
		out = os.Stderr
	}
	vars := Vars()

	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	flagVals := map[string]string{}
	envFile := opts.EnvFile
	if v, ok := lookup("ENV_FILE"); ok && v != "" {
		envFile = v
	}
	fs.Func("env-file", "read variables from this .env file (default ./.env when present)", func(s string) error {
		envFile = s
		return nil
	})
	for _, v := range vars {
		env := v.Env
		fs.Func(v.Flag, v.Desc+" ($"+env+")", func(s string) error {
			flagVals[env] = s
			return nil
		})
	}
	if opts.Flags != nil {
		opts.Flags(fs)
	}
	if opts.Usage != nil {
		fs.Usage = func() { opts.Usage(fs) }
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, &Error{Var: "flags", Msg: err.Error()}
	}

	dotenv, err := readEnvFile(envFile, opts.EnvFile == "" && envFile == "")
	if err != nil {
		return nil, err
	}

	cfg := &Config{}
	sources := make(map[string]Source, len(vars))
	root := reflect.ValueOf(cfg).Elem()
	for _, v := range vars {
		raw, src, err := resolve(v.Env, v.Default, flagVals, lookup, dotenv)
		if err != nil {
			return nil, err
		}
		fv := root.FieldByName(v.Section).FieldByIndex(v.field.Index)
		if err := set(fv, v, raw); err != nil {
			return nil, err
		}
		sources[v.Env] = src
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Loaded{Config: cfg, Sources: sources, Args: fs.Args()}, nil
}

func readEnvFile(path string, optional bool) (map[string]string, error) {
	if path == "" {
		path = ".env"
	}
	m, err := godotenv.Read(path)
	if err != nil {
		if optional && errors.Is(err, os.ErrNotExist) {
			return map[string]string{}, nil
		}
		return nil, &Error{Var: "ENV_FILE", Msg: fmt.Sprintf("reading %s: %v", path, err)}
	}
	return m, nil
}

func resolve(env, def string, flags map[string]string, lookup func(string) (string, bool), dotenv map[string]string) (string, Source, error) {
	if v, ok := flags[env]; ok {
		return v, SourceFlag, nil
	}
	if v, ok := lookup(env); ok {
		return v, SourceEnv, nil
	}
	if p, ok := lookup(env + "_FILE"); ok && p != "" {
		return readSecretFile(env, p)
	}
	if v, ok := dotenv[env]; ok {
		return v, SourceEnvFile, nil
	}
	if p, ok := dotenv[env+"_FILE"]; ok && p != "" {
		return readSecretFile(env, p)
	}
	return def, SourceDefault, nil
}

func readSecretFile(env, path string) (string, Source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", &Error{Var: env + "_FILE", Msg: fmt.Sprintf("cannot read %s: %v", path, errors.Unwrap(err))}
	}
	return strings.TrimRight(string(b), "\r\n"), SourceFile, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

func set(fv reflect.Value, v Var, raw string) error {
	raw = strings.TrimSpace(raw)
	tag := v.field.Tag
	show := raw
	if v.Secret {
		show = "****"
	}
	bad := func(format string, a ...any) error {
		return &Error{Var: v.Env, Msg: fmt.Sprintf("%q: ", show) + fmt.Sprintf(format, a...)}
	}
	switch {
	case fv.Type() == durationType:
		if raw == "" {
			return bad("want a duration such as 250ms, 30s or 168h")
		}
		d, err := time.ParseDuration(raw)
		if err != nil {
			return bad("want a duration such as 250ms, 30s or 168h")
		}
		if m := tag.Get("min"); m != "" {
			if min, _ := time.ParseDuration(m); d < min {
				return bad("must be at least %s", m)
			}
		}
		if m := tag.Get("max"); m != "" {
			if max, _ := time.ParseDuration(m); d > max {
				return bad("must be at most %s", m)
			}
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		if one := tag.Get("oneof"); one != "" {
			canon, ok := oneOf(raw, strings.Split(one, ","), tag.Get("fold") == "true")
			if !ok {
				return bad("must be one of %s", strings.Trim(strings.ReplaceAll(one, ",", ", "), ", "))
			}
			raw = canon
		}
		fv.SetString(raw)
	case fv.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return bad("want a whole number")
		}
		if m := tag.Get("min"); m != "" {
			if min, _ := strconv.Atoi(m); n < min {
				return bad("must be at least %s", m)
			}
		}
		if m := tag.Get("max"); m != "" {
			if max, _ := strconv.Atoi(m); n > max {
				return bad("must be at most %s", m)
			}
		}
		fv.SetInt(int64(n))
	case fv.Kind() == reflect.Bool:
		b, ok := parseBool(raw)
		if !ok {
			return bad("want true or false")
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		fv.Set(reflect.ValueOf(splitList(raw)))
	default:
		panic("config: unsupported field type " + fv.Type().String())
	}
	return nil
}

func oneOf(s string, allowed []string, fold bool) (string, bool) {
	for _, a := range allowed {
		if s == a || (fold && strings.EqualFold(s, a)) {
			return a, true
		}
	}
	return "", false
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "1", "t", "true", "yes", "y", "on":
		return true, true
	case "0", "f", "false", "no", "n", "off":
		return false, true
	}
	return false, false
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
