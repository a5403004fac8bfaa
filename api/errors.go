package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// apiError is an error with its HTTP status and the offending field.
type apiError struct {
	Status int
	Msg    string
	Field  string
}

func (e *apiError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error string `json:"error" doc:"what went wrong"`
	Field string `json:"field,omitempty" doc:"the query parameter, path parameter or body field at fault"`
}

func badParam(field, format string, args ...any) *apiError {
	return &apiError{Status: fiber.StatusBadRequest, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func notFound(what string) *apiError {
	return &apiError{Status: fiber.StatusNotFound, Msg: what + " not found", Field: "id"}
}

func bodyError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		f := te.Field
		if f == "" {
			f = "body"
		}
		return badParam(f, "wrong type: want %s", te.Type.String())
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		f, _ := strconv.Unquote(rest)
		return badParam(truncate(f, 64), "unknown field")
	}
	return badParam("body", "invalid JSON: %s", truncate(msg, 120))
}
