package event

import (
	"regexp"
	"strings"
	"testing"
)

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestServiceToken(t *testing.T) {
	for _, tc := range []struct{ service, token string }{
		{"checkout", "checkout"},
		{"Payments-API-2", "Payments-API-2"},
		{"a.b", "a_2Eb"},
		{"a_b", "a_5Fb"},
		{"a_2Eb", "a_5F2Eb"},
		{"_overflow", "_5Foverflow"},
		{"a b", "a_20b"},
		{"a/b=c", "a_2Fb_3Dc"},
		{"*", "_2A"},
		{">", "_3E"},
		{"café", "caf_C3_A9"},
		{"支付", "_E6_94_AF_E4_BB_98"},
		{"\x00\x7f\xff", "_00_7F_FF"},
		{"-", "-"},
		{"..", "_2E_2E"},
	} {
		got := ServiceToken(tc.service)
		if got != tc.token {
			t.Errorf("ServiceToken(%q) = %q, want %q", tc.service, got, tc.token)
		}
		if !tokenRE.MatchString(got) {
			t.Errorf("ServiceToken(%q) = %q: not subject-safe", tc.service, got)
		}
		back, err := ParseServiceToken(tc.token)
		if err != nil || back != tc.service {
			t.Errorf("ParseServiceToken(%q) = %q, %v; want %q", tc.token, back, err, tc.service)
		}
	}
	if got := ServiceToken(""); got != "" {
		t.Errorf(`ServiceToken("") = %q, want ""`, got)
	}
}

func TestServiceTokenInjective(t *testing.T) {
	// Names that a replacing (rather than escaping) rule would merge.
	names := []string{"a.b", "a_b", "a-b", "a b", "a/b", "a_2Eb", "a_5Fb", "a2Eb", "a.", "a_", "_a", ".a", "A.B", "a..b", "a._b"}
	seen := map[string]string{}
	for _, n := range names {
		tok := ServiceToken(n)
		if prev, dup := seen[tok]; dup {
			t.Errorf("ServiceToken(%q) == ServiceToken(%q) == %q", n, prev, tok)
		}
		seen[tok] = n
	}
}

func TestServiceTokenAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = ServiceToken("checkout-api") }); n != 0 {
		t.Errorf("ServiceToken of a plain name: %.0f allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ServiceToken("checkout.api_v2") }); n != 1 {
		t.Errorf("ServiceToken with escapes: %.0f allocs, want 1", n)
	}
}

func TestParseServiceTokenRejects(t *testing.T) {
	for _, tok := range []string{
		"",         // empty
		"a.b",      // separator
		"a b",      // space
		"a*",       // wildcard
		"a>",       // wildcard
		"ä",        // non-ASCII
		"_",        // truncated escape
		"a_",       // truncated escape
		"a_4",      // truncated escape
		"_4G",      // not hex
		"_2e",      // lower-case hex
		"_x2E",     // not hex
		"_41",      // 'A' is never escaped
		"_2D",      // '-' is never escaped
		"_30",      // '0' is never escaped
		"_7A",      // 'z' is never escaped
		"ok_2Eok_", // trailing '_'
	} {
		if got, err := ParseServiceToken(tok); err == nil {
			t.Errorf("ParseServiceToken(%q) = %q, want an error", tok, got)
		} else if !strings.HasPrefix(err.Error(), "event: ") {
			t.Errorf("ParseServiceToken(%q): error %q lacks the package prefix", tok, err)
		}
	}
}

func FuzzServiceToken(f *testing.F) {
	for _, s := range []string{"checkout", "a.b", "a_b", "_5F", "café", "\x00", "_41", "a_2", "-", "支付.v2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Every name round-trips through a subject-safe token.
		if s != "" {
			tok := ServiceToken(s)
			if !tokenRE.MatchString(tok) {
				t.Fatalf("ServiceToken(%q) = %q: not subject-safe", s, tok)
			}
			back, err := ParseServiceToken(tok)
			if err != nil || back != s {
				t.Fatalf("ParseServiceToken(ServiceToken(%q)) = %q, %v", s, back, err)
			}
		}
		// Every accepted token is the canonical token of its name, so two
		// different tokens never name the same service.
		if name, err := ParseServiceToken(s); err == nil {
			if tok := ServiceToken(name); tok != s {
				t.Fatalf("ParseServiceToken(%q) = %q, whose token is %q", s, name, tok)
			}
		}
	})
}
