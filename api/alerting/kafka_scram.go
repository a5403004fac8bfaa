package alerting

// Copied from bridge/scram.go (unexported there): the alert engine writes
// to the same Kafka with the same SASL configuration.

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go/sasl"
)

// scramMechanism is a SASL SCRAM client (RFC 5802) for Kafka's
// SCRAM-SHA-256 and SCRAM-SHA-512, written here because kafka-go's
// sasl/scram needs a module this build does not carry. Passwords are used
// as given (no SASLprep), as Kafka's own clients do for ASCII passwords.
type scramMechanism struct {
	name     string
	hash     func() hash.Hash
	user     string
	password string
	nonce    func() string // test seam
}

func newSCRAM(name string, user, password string) (*scramMechanism, error) {
	m := &scramMechanism{name: name, user: user, password: password, nonce: randomNonce}
	switch name {
	case "SCRAM-SHA-256":
		m.hash = sha256.New
	case "SCRAM-SHA-512":
		m.hash = sha512.New
	default:
		return nil, fmt.Errorf("unsupported SCRAM mechanism %q", name)
	}
	if user == "" {
		return nil, errors.New("SCRAM needs a user name")
	}
	return m, nil
}

func randomNonce() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (m *scramMechanism) Name() string { return m.name }

func (m *scramMechanism) Start(context.Context) (sasl.StateMachine, []byte, error) {
	s := &scramSession{m: m, nonce: m.nonce()}
	s.clientFirstBare = "n=" + saslName(m.user) + ",r=" + s.nonce
	return s, []byte("n,," + s.clientFirstBare), nil
}

type scramSession struct {
	m               *scramMechanism
	nonce           string
	clientFirstBare string
	serverSignature []byte
	step            int
}

func (s *scramSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	s.step++
	switch s.step {
	case 1:
		resp, err := s.final(string(challenge))
		return false, resp, err
	case 2:
		return true, nil, s.verify(string(challenge))
	}
	return false, nil, errors.New("scram: unexpected challenge")
}

// final answers the server-first message with the client proof.
func (s *scramSession) final(serverFirst string) ([]byte, error) {
	attrs := scramAttrs(serverFirst)
	nonce, salt64, iter := attrs["r"], attrs["s"], attrs["i"]
	if e, ok := attrs["e"]; ok {
		return nil, fmt.Errorf("scram: server error %q", e)
	}
	if !strings.HasPrefix(nonce, s.nonce) || len(nonce) == len(s.nonce) {
		return nil, errors.New("scram: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("scram: bad salt")
	}
	n, err := strconv.Atoi(iter)
	if err != nil || n < 1 || n > 1<<20 {
		return nil, fmt.Errorf("scram: bad iteration count %q", iter)
	}
	salted, err := pbkdf2.Key(s.m.hash, s.m.password, salt, n, s.m.hash().Size())
	if err != nil {
		return nil, fmt.Errorf("scram: %w", err)
	}
	clientKey := s.hmac(salted, "Client Key")
	h := s.m.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	withoutProof := "c=biws,r=" + nonce
	authMsg := s.clientFirstBare + "," + serverFirst + "," + withoutProof
	sig := s.hmac(storedKey, authMsg)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	s.serverSignature = s.hmac(s.hmac(salted, "Server Key"), authMsg)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server's signature (mutual authentication).
func (s *scramSession) verify(serverFinal string) error {
	attrs := scramAttrs(serverFinal)
	if e, ok := attrs["e"]; ok {
		return fmt.Errorf("scram: server error %q", e)
	}
	v, err := base64.StdEncoding.DecodeString(attrs["v"])
	if err != nil || !hmac.Equal(v, s.serverSignature) {
		return errors.New("scram: bad server signature")
	}
	return nil
}

func (s *scramSession) hmac(key []byte, msg string) []byte {
	mac := hmac.New(s.m.hash, key)
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

// scramAttrs parses "k=v,k=v" (values may contain '=').
func scramAttrs(msg string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(msg, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && len(k) == 1 {
			out[k] = v
		}
	}
	return out
}

// saslName escapes ',' and '=' in a user name (RFC 5802 §5.1).
func saslName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}
