package event

import (
	"errors"
	"fmt"
	"strings"
)

const upperHex = "0123456789ABCDEF"

// tokenKeep reports whether ServiceToken keeps byte c as is.
func tokenKeep(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

// ServiceToken returns the subject- and KV-key-safe token for a service
// name: bytes in [A-Za-z0-9-] are kept, every other byte b becomes '_'
// followed by two upper-case hex digits of b ("a.b" → "a_2Eb", "a_b" →
// "a_5Fb"). The mapping is injective and the token of a non-empty name
// matches ^[A-Za-z0-9_-]+$. ServiceToken("") is "", which is not a valid
// token (Decode never yields an empty service). A name that needs no
// escaping is returned without allocating.
func ServiceToken(service string) string {
	escapes := 0
	for i := 0; i < len(service); i++ {
		if !tokenKeep(service[i]) {
			escapes++
		}
	}
	if escapes == 0 {
		return service
	}
	var b strings.Builder
	b.Grow(len(service) + 2*escapes)
	for i := 0; i < len(service); i++ {
		c := service[i]
		if tokenKeep(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
	return b.String()
}

// ParseServiceToken returns the service name whose ServiceToken is tok. It
// accepts exactly the tokens ServiceToken produces for non-empty names and
// rejects everything else: the empty token, bytes outside [A-Za-z0-9_-], an
// '_' not followed by two upper-case hex digits, and an escape of a byte that
// ServiceToken keeps (e.g. "_41" for "A"), so every name has one token.
func ParseServiceToken(tok string) (string, error) {
	if tok == "" {
		return "", errors.New("event: empty service token")
	}
	escapes := 0
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c == '_':
			escapes++
		case !tokenKeep(c):
			return "", fmt.Errorf("event: service token %s: byte %s at %d is not allowed",
				quoteShort(tok), quoteShort(tok[i:i+1]), i)
		}
	}
	if escapes == 0 {
		return tok, nil
	}
	b := make([]byte, 0, max(len(tok)-2*escapes, 0))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '_' {
			b = append(b, c)
			continue
		}
		hi, lo := -1, -1
		if i+2 < len(tok) {
			hi, lo = unhexUpper(tok[i+1]), unhexUpper(tok[i+2])
		}
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("event: service token %s: '_' at %d is not followed by two upper-case hex digits",
				quoteShort(tok), i)
		}
		v := byte(hi<<4 | lo)
		if tokenKeep(v) {
			return "", fmt.Errorf("event: service token %s: escape at %d encodes %q, which is never escaped",
				quoteShort(tok), i, v)
		}
		b = append(b, v)
		i += 2
	}
	return string(b), nil
}

func unhexUpper(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
