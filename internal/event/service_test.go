package event

import (
	"strings"
	"testing"
)

func TestValidService(t *testing.T) {
	for _, tc := range []struct {
		name, why string // why == "": valid
	}{
		{"checkout", ""},
		{"payments-api.v2_EU", ""},
		{"café-支付 ✓", ""},
		{"check out", ""},              // inner space
		{"a\u00a0b", ""},               // inner NBSP
		{"a\u200db", ""},               // zero-width joiner (emoji sequences)
		{"a\u00a1", ""},                // first printable after C1
		{"\uFFFD", ""},                 // what a lone surrogate escape becomes
		{strings.Repeat("s", 128), ""}, // longest
		{strings.Repeat("é", 64), ""},  // longest, multibyte
		{"", svcEmpty},
		{strings.Repeat("s", 129), svcTooLong},
		{"a\xffb", svcBadUTF8},
		{"caf\xc3", svcBadUTF8},
		{"\xed\xa0\x80", svcBadUTF8}, // encoded surrogate
		{"a\x00b", svcControl},
		{"a\tb", svcControl},
		{"line\n", svcControl},
		{"a\x7fb", svcControl},
		{"a\u0080b", svcControl}, // C1, first
		{"a\u0085b", svcControl}, // NEL
		{"a\u009fb", svcControl}, // C1, last
		{"a\u2028b", svcLineSep},
		{"a\u2029b", svcLineSep},
		{" ", svcBlank},
		{"   ", svcBlank},
		{"\u00a0\u3000", svcBlank},
		{" checkout", svcWhitespace},
		{"checkout ", svcWhitespace},
		{"\u00a0checkout", svcWhitespace},
		{"checkout\u3000", svcWhitespace},
	} {
		err := ValidService(tc.name)
		switch {
		case tc.why == "" && err != nil:
			t.Errorf("ValidService(%q) = %v, want nil", tc.name, err)
		case tc.why != "" && (err == nil || err.Error() != tc.why):
			t.Errorf("ValidService(%q) = %v, want %q", tc.name, err, tc.why)
		}
		if got, want := err == nil, refValidService(tc.name); got != want {
			t.Errorf("ValidService(%q) valid = %v, reference says %v", tc.name, got, want)
		}
	}
}

func TestValidServiceAllocs(t *testing.T) {
	b := []byte("café-支付 checkout")
	if n := testing.AllocsPerRun(100, func() { _ = serviceProblem(b) }); n != 0 {
		t.Errorf("serviceProblem allocates %v times", n)
	}
}

// FuzzValidService checks the hand-written rule against the reference
// written with the unicode package.
func FuzzValidService(f *testing.F) {
	for _, s := range []string{"checkout", "", " ", "a\u0085", "\u00a0x", "a\u2028", "\xff", strings.Repeat("é", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidService(s) == nil, refValidService(s); got != want {
			t.Fatalf("ValidService(%q) valid = %v, reference says %v", s, got, want)
		}
	})
}
