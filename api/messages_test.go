package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestTruncate: messages are cut at n bytes on a rune boundary, invalid
// UTF-8 is replaced, and a cut is marked.
func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 5, "abcde…"},
		{"ééééé", 5, "éé…"}, // 2-byte runes: the cut moves back to a boundary
		{"a\xffb", 10, "a\uFFFDb"},
		{"日本語", 1, "…"},
	} {
		got := truncate(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// TestDBErrorText: /health names a known database failure plainly and
// shows any other error, cut to 200 bytes.
func TestDBErrorText(t *testing.T) {
	if got := dbErrorText(&pgconn.PgError{Code: "42P01"}); got != "table missing: run stacklens migrate" {
		t.Errorf("missing table: %q", got)
	}
	if got := dbErrorText(fmt.Errorf("ping: %w", context.DeadlineExceeded)); got != "query timed out" {
		t.Errorf("deadline: %q", got)
	}
	long := errors.New(strings.Repeat("x", 500))
	if got := dbErrorText(long); len(got) > 200+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("an unknown error is not cut to 200 bytes: %d bytes", len(got))
	}
}
