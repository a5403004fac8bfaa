// Package dashboard is StackLens' web dashboard (docs/ARCHITECTURE.md §2.5, docs/dashboard.md): a
// single page of plain HTML, CSS and JavaScript, embedded in the binary, that
// the API serves at GET /. It reads the same authenticated JSON API as every
// other client (/metrics, /health-status, /alerts, /health, /slos) from the browser;
// the server side only serves files.
//
// Mount it on the API with api.Deps{Mount: dashboard.Mount}. The page and
// its assets are public (no credentials, no rate limit) because they hold
// no data: the browser asks for an API key when the API answers 401.
//
// There is no build step: the files under static/ are what the browser
// runs. They are compressed once at start (gzip) and served with a strong
// ETag, so a reload costs a 304.
package dashboard

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/internal/window"
)

//go:embed static
var static embed.FS

// Prefix is the URL path under which the assets are served; the page
// itself is served at "/".
const Prefix = "/dashboard/"

// csp allows nothing but this origin: no inline script or style, no
// third-party hosts, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type asset struct {
	body  []byte
	gz    []byte // nil when gzip does not make it smaller
	ctype string
	etag  string
}

var assets = mustLoad()

func mustLoad() map[string]*asset {
	out := map[string]*asset{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		a.ctype = mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // independent of the host's mime tables
		case ".js":
			a.ctype = "text/javascript; charset=utf-8"
		case ".css":
			a.ctype = "text/css; charset=utf-8"
		case ".html":
			a.ctype = "text/html; charset=utf-8"
		case ".svg":
			a.ctype = "image/svg+xml"
		}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if buf.Len() < len(body)*9/10 {
			a.gz = buf.Bytes()
		}
		out[strings.TrimPrefix(p, "static/")] = a
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("dashboard: embedded assets: %v", err))
	}
	if out["index.html"] == nil {
		panic("dashboard: index.html missing from the embedded assets")
	}
	return out
}

// FS is the embedded assets (index.html, app.js, …) as a file system, for
// callers that serve them some other way.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	return sub
}

// Mount registers the dashboard on the API server: GET / (the page),
// GET /dashboard/<file> for each of its scripts, styles and icon, and
// WindowsPath, all public. Use it as api.Deps.Mount. Each file is its own route, so the
// OpenAPI document and /stats list them by name.
func Mount(s *api.Server) error {
	h := Handler()
	s.Route(fiber.MethodGet, "/", api.AccessPublic, h)
	s.Route(fiber.MethodGet, WindowsPath, api.AccessPublic, windowsHandler(s.Windows()))
	for _, name := range Files() {
		if name != "index.html" {
			s.Route(fiber.MethodGet, Prefix+name, api.AccessPublic, h)
		}
	}
	return nil
}

// WindowsPath serves the configured aggregation windows, which the page's
// window selector offers: {"windows": [{"name": "1min", "seconds": 60}, …]},
// smallest first. Public like the page: the windows are no secret.
const WindowsPath = Prefix + "windows.json"

// Window is one entry of WindowsPath.
type Window struct {
	Name    string `json:"name"`
	Seconds int64  `json:"seconds"`
}

func windowsHandler(ws []window.Window) fiber.Handler {
	list := make([]Window, 0, len(ws))
	for _, w := range ws {
		list = append(list, Window{Name: w.Name, Seconds: int64(w.Seconds())})
	}
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.JSON(fiber.Map{"windows": list})
	}
}

// Files lists the embedded asset names, sorted.
func Files() []string {
	out := make([]string, 0, len(assets))
	for name := range assets {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Handler serves "/" as index.html and Prefix+name as the asset name; any
// other path is a 404. It is what Mount registers; use it directly to serve
// the dashboard from a plain Fiber app.
func Handler() fiber.Handler {
	return func(c *fiber.Ctx) error {
		name := "index.html"
		if p := c.Path(); p != "/" {
			rest, ok := strings.CutPrefix(p, Prefix)
			if !ok || rest == "" || strings.Contains(rest, "..") {
				return notFound(c)
			}
			name = rest
		}
		a := assets[name]
		if a == nil {
			return notFound(c)
		}
		h := &c.Response().Header
		h.Set(fiber.HeaderCacheControl, "no-cache") // revalidate: the ETag makes it cheap
		h.Set(fiber.HeaderETag, a.etag)
		h.Set(fiber.HeaderVary, fiber.HeaderAcceptEncoding)
		h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
		if name == "index.html" {
			h.Set(fiber.HeaderContentSecurityPolicy, csp)
			h.Set(fiber.HeaderXFrameOptions, "DENY")
		}
		if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" && etagMatch(inm, a.etag) {
			return c.SendStatus(fiber.StatusNotModified)
		}
		c.Set(fiber.HeaderContentType, a.ctype)
		if a.gz != nil && acceptsGzip(c.Get(fiber.HeaderAcceptEncoding)) {
			c.Set(fiber.HeaderContentEncoding, "gzip")
			return c.Send(a.gz)
		}
		return c.Send(a.body)
	}
}

func notFound(c *fiber.Ctx) error {
	return c.Status(fiber.StatusNotFound).JSON(fiber.Map{"error": "no such dashboard file: " + truncate(c.Path(), 200)})
}

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// etagMatch reports whether an If-None-Match header names etag (weak
// validators compare equal, as RFC 9110 §13.1.2 asks for GET).
func etagMatch(header, etag string) bool {
	for _, v := range strings.Split(header, ",") {
		v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
		if v == "*" || v == etag {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
