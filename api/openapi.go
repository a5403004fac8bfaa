package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// The OpenAPI 3.0 document is generated from the route table (routes.go)
// and, for schemas, from the Go types the handlers encode, by reflection
// over their json tags: a field without omitempty is required, a pointer
// is nullable, an `enum:"a,b"` tag lists the allowed values and a `doc`
// tag describes the field. The document therefore describes exactly what
// the handlers send; the tests check it against real responses.

var (
	timeType      = reflect.TypeOf(time.Time{})
	marshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
)

type schemaGen struct {
	components map[string]any
}

// schemaFor returns the schema of t, registering named structs as
// components and returning a $ref to them.
func (g *schemaGen) schemaFor(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() != reflect.Struct && t.Kind() != reflect.Pointer && t.Implements(marshalerType):
		// Scalars with their own JSON form are strings (slo.Duration: "1h").
		return map[string]any{"type": "string"}
	case t.Kind() == reflect.Pointer:
		m := g.schemaFor(t.Elem())
		if _, isRef := m["$ref"]; isRef {
			return map[string]any{"allOf": []any{m}, "nullable": true}
		}
		m["nullable"] = true
		return m
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int32:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float64, reflect.Float32:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schemaFor(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object"}
	case reflect.Struct:
		name := t.Name()
		if _, ok := g.components[name]; !ok {
			g.components[name] = nil // placeholder against recursion
			g.components[name] = g.structSchema(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		omit := strings.Contains(opts, "omitempty")
		ft := f.Type
		var m map[string]any
		if f.Tag.Get("required") == "true" && ft.Kind() == reflect.Pointer {
			m = g.schemaFor(ft.Elem()) // required pointer: presence check, not nullable
		} else if omit && ft.Kind() == reflect.Pointer {
			m = g.schemaFor(ft.Elem()) // optional, never null
		} else {
			m = g.schemaFor(ft)
		}
		if e := f.Tag.Get("enum"); e != "" {
			m["enum"] = strings.Split(e, ",")
		}
		if d := f.Tag.Get("doc"); d != "" {
			if _, isRef := m["$ref"]; isRef {
				m = map[string]any{"allOf": []any{m}, "description": d}
			} else {
				m["description"] = d
			}
		}
		props[name] = m
		if f.Tag.Get("required") == "true" || (!omit && f.Tag.Get("required") == "") {
			required = append(required, name)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// openAPIPath turns a Fiber path (/alert-rules/:id) into an OpenAPI one
// (/alert-rules/{id}).
func openAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

func errorResponse(code int) map[string]any {
	desc := http.StatusText(code)
	switch code {
	case 400:
		desc = "invalid parameter or body; field names it (unknown and repeated query parameters are errors too)"
	case 401:
		desc = "credentials missing or wrong (when credentials are configured)"
	case 403:
		desc = "the caller's role may not do this (writes need admin)"
	case 429:
		desc = "rate limit exceeded; see Retry-After"
	case 503:
		desc = "database unavailable or query timed out"
	}
	r := map[string]any{
		"description": desc,
		"content": map[string]any{"application/json": map[string]any{
			"schema": map[string]any{"$ref": "#/components/schemas/errorBody"},
		}},
	}
	if code == 429 {
		r["headers"] = map[string]any{"Retry-After": map[string]any{
			"description": "seconds until a request will be accepted", "schema": map[string]any{"type": "integer"}}}
	}
	return r
}

// buildOpenAPI renders the document for the routes of s.
func buildOpenAPI(s *Server) ([]byte, error) {
	g := &schemaGen{components: map[string]any{}}
	g.schemaFor(reflect.TypeOf(errorBody{}))
	paths := map[string]any{}
	addOp := func(path, method string, op map[string]any) {
		p := openAPIPath(path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		item[strings.ToLower(method)] = op
	}
	for _, re := range s.routes {
		if re.spec == nil {
			var op map[string]any
			if re.method == "GET" && re.path == "/" {
				op = map[string]any{
					"operationId": "getDashboard", "tags": []string{"dashboard"},
					"summary": "Web dashboard (a placeholder page linking to /openapi.json until the dashboard is installed)",
					"responses": map[string]any{
						"200": map[string]any{"description": "HTML page", "content": map[string]any{"text/html": map[string]any{"schema": map[string]any{"type": "string"}}}},
					},
				}
			} else {
				op = map[string]any{
					"operationId": strings.ToLower(re.method) + strings.ReplaceAll(re.path, "/", "_"),
					"tags":        []string{"dashboard"},
					"summary":     "extension route (dashboard asset)",
					"responses":   map[string]any{"200": map[string]any{"description": "OK"}},
				}
			}
			resp := op["responses"].(map[string]any)
			switch re.access {
			case AccessPublic:
				op["security"] = []any{}
			case AccessReader:
				resp["401"], resp["429"] = errorResponse(401), errorResponse(429)
			case AccessAdmin:
				resp["401"], resp["403"], resp["429"] = errorResponse(401), errorResponse(403), errorResponse(429)
			}
			addOp(re.path, re.method, op)
			continue
		}
		r := re.spec
		op := map[string]any{"operationId": r.operationID, "summary": r.summary, "tags": []string{r.tag}}
		if r.description != "" {
			op["description"] = r.description
		}
		var params []any
		if r.pathID != "" {
			params = append(params, map[string]any{"name": "id", "in": "path", "required": true, "description": r.pathID,
				"schema": map[string]any{"type": "integer", "format": "int64", "minimum": 1}})
		}
		for _, q := range r.query {
			schema := q.schema
			if q.name == "window" {
				schema = enumSchema(s.winNames[0], s.winNames...)
			}
			params = append(params, map[string]any{"name": q.name, "in": "query", "required": false, "description": q.desc, "schema": schema})
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.body != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": g.schemaFor(reflect.TypeOf(r.body))}}}
		}
		responses := map[string]any{}
		ok := map[string]any{"description": http.StatusText(r.status)}
		if r.resp != nil {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.schemaFor(reflect.TypeOf(r.resp))}}
		}
		responses[strconv.Itoa(r.status)] = ok
		codes := append([]int(nil), r.errors...)
		switch r.access {
		case AccessPublic:
			op["security"] = []any{}
		case AccessReader:
			codes = append(codes, 401, 429)
		case AccessAdmin:
			codes = append(codes, 401, 403, 429)
		}
		for _, c := range codes {
			responses[strconv.Itoa(c)] = errorResponse(c)
		}
		op["responses"] = responses
		addOp(r.path, r.method, op)
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "StackLens API",
			"version": s.cfg.Version,
			"description": "Live service analytics: per-service window metrics, service health, alerts, SLA reports, SLOs with error budgets and burn rates (and their definitions), alert rules and silences. " +
				"Authentication: Authorization: Bearer <key> (API_READER_KEYS / API_ADMIN_KEYS) or Basic (API_USERS). Readers may GET, admins may also write. " +
				"When no credentials are configured the API only listens on loopback and serves anonymous callers as readers. /health and /ready never need credentials. " +
				"Errors are {\"error\": ..., \"field\": ...}. See docs/api.md.",
		},
		"servers": []any{map[string]any{"url": "/"}},
		"tags": []any{
			map[string]any{"name": "metrics"}, map[string]any{"name": "alerts"}, map[string]any{"name": "rules"},
			map[string]any{"name": "silences"}, map[string]any{"name": "slos"}, map[string]any{"name": "operations"}, map[string]any{"name": "dashboard"},
		},
		"security": []any{map[string]any{"bearerAuth": []any{}}, map[string]any{"basicAuth": []any{}}},
		"paths":    paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{"type": "http", "scheme": "bearer", "description": "API key from API_READER_KEYS or API_ADMIN_KEYS"},
				"basicAuth":  map[string]any{"type": "http", "scheme": "basic", "description": "user:password from API_USERS"},
			},
		},
	}
	return marshalJSON(doc)
}
