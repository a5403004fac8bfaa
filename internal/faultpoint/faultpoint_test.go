package faultpoint

import "testing"

func TestHitCallsTheHandlerUntilRemoved(t *testing.T) {
	Hit("nothing installed") // must not panic
	if Enabled() {
		t.Fatal("Enabled with no handler")
	}
	var got []string
	Set(func(p string) { got = append(got, p) })
	if !Enabled() {
		t.Fatal("not Enabled after Set")
	}
	Hit("a")
	Hit("b")
	Set(nil)
	Hit("c")
	if Enabled() || len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("handler saw %q, Enabled %v; want [a b], false", got, Enabled())
	}
}
