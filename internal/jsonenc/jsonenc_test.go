package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

func reference(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "checkout", `a"b\c`, "tab\tnl\nret\rbs\bff\f", "\x00\x01\x1f\x7f", "<html>&amp;", "héllo wörld ✓", "\u2028\u2029", "bad\xffutf8\xc3", "emoji 🚀"} {
		if got, want := AppendString(nil, s), reference(s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("checkout")
	f.Add("\x00\u2028\xff")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := AppendString([]byte("x"), s), append([]byte("x"), reference(s)...); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}
