// Package telemetry gives every role its logger, its Prometheus metrics
// server and the health/readiness registry behind /health and /ready.
package telemetry

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// NewLogger returns the process logger: JSON lines when format is "json",
// otherwise tint's text handler, coloured only when w is a terminal.
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	lvl := ParseLevel(level)
	if strings.EqualFold(format, "json") {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
	}
	noColor := true
	if f, ok := w.(*os.File); ok {
		noColor = !isatty.IsTerminal(f.Fd())
	}
	return slog.New(tint.NewTextHandler(w, &tint.Options{
		Level:      lvl,
		TimeFormat: time.TimeOnly + ".000",
		NoColor:    noColor,
	}))
}

// ParseLevel maps the seed's LOG_LEVEL names (DEBUG, INFO, WARN/WARNING,
// ERROR, any case) to slog levels; anything else is INFO.
func ParseLevel(s string) slog.Level {
	switch strings.ToUpper(s) {
	case "DEBUG":
		return slog.LevelDebug
	case "WARN", "WARNING":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Discard is a logger that drops everything (tests).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
