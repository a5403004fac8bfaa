package agg

import (
	"regexp"
	"testing"
)

var kvKeyRE = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestKVKey(t *testing.T) {
	tests := []struct {
		k    Key
		want string
	}{
		{Key{Service: "checkout", Window: 2, Start: 1795914000}, "checkout.1795914000"},
		{Key{Service: "a.b", Start: 60}, "a_2Eb.60"},
		{Key{Service: "a_b", Start: 60}, "a_5Fb.60"},
		{Key{Service: "café", Start: -60}, "caf_C3_A9.-60"},
		{Key{Service: OverflowService, Start: 0}, "_5Foverflow.0"},
	}
	for _, tt := range tests {
		got := tt.k.KVKey()
		if got != tt.want {
			t.Errorf("%+v.KVKey() = %q, want %q", tt.k, got, tt.want)
		}
		if !kvKeyRE.MatchString(got) {
			t.Errorf("%q is not a valid KV key", got)
		}
		back, err := ParseKVKey(got)
		want := tt.k
		want.Window = 0
		if err != nil || back != want {
			t.Errorf("ParseKVKey(%q) = %+v, %v; want %+v", got, back, err, want)
		}
	}
}

func TestParseKVKeyErrors(t *testing.T) {
	for _, k := range []string{
		"", "checkout", "checkout.", ".60", "checkout.+60", "checkout.060", "checkout.6a",
		"checkout.-0", "a.b.60", "a_2eb.60", "a_41.60", "che ckout.60", "checkout.99999999999999999999",
	} {
		if got, err := ParseKVKey(k); err == nil {
			t.Errorf("ParseKVKey(%q) = %+v, want error", k, got)
		}
	}
}
