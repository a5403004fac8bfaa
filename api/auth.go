package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/config"
)

// principal is the authenticated caller, stored in c.Locals("principal").
type principal struct {
	Name string      // "user:<name>", "key:<sha256 prefix>" or "anonymous"
	Role config.Role // RoleReader or RoleAdmin
}

const localsPrincipal = "stacklens.principal"

var anonymousPrincipal = &principal{Name: "anonymous", Role: config.RoleReader}

type keyEntry struct {
	sum  [32]byte
	role config.Role
	name string
}

type userEntry struct {
	sum  [32]byte // sha256 of the password
	role config.Role
	name string
}

// authenticator checks bearer keys and basic-auth users. Secrets are kept
// only as SHA-256 digests and compared with crypto/subtle over every
// configured key, so neither a key's value nor its position leaks through
// timing; they are never logged (a key is named by a digest prefix).
type authenticator struct {
	keys      []keyEntry
	users     map[string]userEntry
	anonymous bool // no credentials configured: anonymous readers
	dummy     [32]byte
}

func newAuthenticator(cr config.Credentials, anonymous bool) *authenticator {
	a := &authenticator{users: map[string]userEntry{}, anonymous: anonymous}
	for k, role := range cr.Keys {
		sum := sha256.Sum256([]byte(k))
		a.keys = append(a.keys, keyEntry{sum: sum, role: role, name: "key:" + hex.EncodeToString(sum[:4])})
	}
	for u, bc := range cr.Users {
		a.users[u] = userEntry{sum: sha256.Sum256([]byte(bc.Password)), role: bc.Role, name: "user:" + u}
	}
	a.dummy = sha256.Sum256([]byte("stacklens-no-such-user"))
	return a
}

// authenticate returns the caller for the Authorization header, nil when
// the header is missing, or ok=false when credentials were given but are
// wrong.
func (a *authenticator) authenticate(header string) (p *principal, ok bool) {
	if header == "" {
		return nil, true
	}
	scheme, cred, found := strings.Cut(header, " ")
	if !found {
		return nil, false
	}
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		sum := sha256.Sum256([]byte(cred))
		var match *keyEntry
		for i := range a.keys {
			if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
				match = &a.keys[i]
			}
		}
		if match == nil {
			return nil, false
		}
		return &principal{Name: match.name, Role: match.role}, true
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return nil, false
		}
		user, pw, found := strings.Cut(string(raw), ":")
		if !found {
			return nil, false
		}
		sum := sha256.Sum256([]byte(pw))
		ue, known := a.users[user]
		want := a.dummy
		if known {
			want = ue.sum
		}
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !known {
			return nil, false
		}
		return &principal{Name: ue.name, Role: ue.role}, true
	}
	return nil, false
}

// authorize wraps h with the access check of a route.
func (s *Server) authorize(access Access, h fiber.Handler) fiber.Handler {
	if access == AccessPublic {
		return h
	}
	return func(c *fiber.Ctx) error {
		p, ok := s.auth.authenticate(c.Get(fiber.HeaderAuthorization))
		if !ok {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="stacklens", Basic realm="stacklens"`)
			return &apiError{Status: fiber.StatusUnauthorized, Msg: "invalid credentials"}
		}
		if p == nil {
			if !s.auth.anonymous {
				c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="stacklens", Basic realm="stacklens"`)
				return &apiError{Status: fiber.StatusUnauthorized, Msg: "credentials required (Authorization: Bearer <key> or Basic)"}
			}
			p = anonymousPrincipal
		}
		if access == AccessAdmin && p.Role != config.RoleAdmin {
			msg := "this operation needs the admin role"
			if p == anonymousPrincipal {
				msg = "this operation needs the admin role; no credentials are configured (set API_ADMIN_KEYS or API_USERS)"
			}
			return &apiError{Status: fiber.StatusForbidden, Msg: msg}
		}
		c.Locals(localsPrincipal, p)
		return h(c)
	}
}

// caller is the principal of an authorized request ("anonymous" otherwise).
func caller(c *fiber.Ctx) string {
	if p, ok := c.Locals(localsPrincipal).(*principal); ok {
		return p.Name
	}
	return "anonymous"
}
