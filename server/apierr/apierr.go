// Package apierr is Portcullis's one error type for HTTP answers: an OAuth
// 2.0 style error (RFC 6749 §5.2, RFC 6750 §3) with a code, a description
// for a person, an HTTP status and a wrapped cause that is logged, never sent.
//
// Sentinels are never mutated: the With… builders return copies. The server's
// HTTP error handler is the single place these become responses.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an error answered to a client as
// {"error": Code, "error_description": Description} with Status.
type Error struct {
	Code        string
	Description string
	Status      int
	// WWWAuthenticate, when set, is sent as the WWW-Authenticate header.
	WWWAuthenticate string
	// RetryAfterSeconds, when positive, is sent as Retry-After.
	RetryAfterSeconds int
	cause             error
}

// Error implements error; it includes the cause for logs, never for clients.
func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Description, e.cause)
	}
	if e.Description != "" {
		return e.Code + ": " + e.Description
	}
	return e.Code
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.cause }

// Is matches errors with the same code and status, so errors.Is(err, ErrInvalidGrant) works on copies.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Status == e.Status
}

// WithDescription returns a copy with a description for a person.
func (e *Error) WithDescription(format string, args ...any) *Error {
	c := *e
	c.Description = fmt.Sprintf(format, args...)
	return &c
}

// WithCause returns a copy wrapping cause (logged, never sent).
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.cause = cause
	return &c
}

// WithStatus returns a copy with another HTTP status.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// WithWWWAuthenticate returns a copy that sends the header value.
func (e *Error) WithWWWAuthenticate(v string) *Error {
	c := *e
	c.WWWAuthenticate = v
	return &c
}

// WithRetryAfter returns a copy that sends Retry-After.
func (e *Error) WithRetryAfter(seconds int) *Error {
	c := *e
	if seconds < 1 {
		seconds = 1
	}
	c.RetryAfterSeconds = seconds
	return &c
}

// Body is the JSON body of an error.
type Body struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Body returns the JSON body for the client.
func (e *Error) Body() Body { return Body{Error: e.Code, ErrorDescription: e.Description} }

// From converts any error into an *Error: an *Error in the chain is returned
// as is; anything else is a 500 server_error that reveals nothing.
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrServer.WithCause(err)
}

// OAuth 2.0 (RFC 6749 §5.2, RFC 7009, RFC 6750) and Portcullis error sentinels.
var (
	ErrInvalidRequest         = &Error{Code: "invalid_request", Status: http.StatusBadRequest, Description: "The request is malformed."}
	ErrInvalidClient          = &Error{Code: "invalid_client", Status: http.StatusUnauthorized, Description: "Client authentication failed."}
	ErrInvalidGrant           = &Error{Code: "invalid_grant", Status: http.StatusBadRequest, Description: "The grant is invalid, expired or revoked."}
	ErrUnauthorizedClient     = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest, Description: "The client may not use this grant type."}
	ErrUnsupportedGrantType   = &Error{Code: "unsupported_grant_type", Status: http.StatusBadRequest, Description: "The grant type is not supported."}
	ErrUnsupportedTokenType   = &Error{Code: "unsupported_token_type", Status: http.StatusBadRequest, Description: "The token type is not supported."}
	ErrInvalidScope           = &Error{Code: "invalid_scope", Status: http.StatusBadRequest, Description: "The requested scope is invalid."}
	ErrInvalidToken           = &Error{Code: "invalid_token", Status: http.StatusUnauthorized, Description: "The access token is invalid, expired or revoked."}
	ErrInsufficientScope      = &Error{Code: "insufficient_scope", Status: http.StatusForbidden, Description: "The access token lacks the required permission."}
	ErrUnauthorized           = &Error{Code: "unauthorized", Status: http.StatusUnauthorized, Description: "Authentication is required."}
	ErrForbidden              = &Error{Code: "forbidden", Status: http.StatusForbidden, Description: "Not allowed."}
	ErrNotFound               = &Error{Code: "not_found", Status: http.StatusNotFound, Description: "Not found."}
	ErrMethodNotAllowed       = &Error{Code: "method_not_allowed", Status: http.StatusMethodNotAllowed, Description: "Method not allowed."}
	ErrConflict               = &Error{Code: "conflict", Status: http.StatusConflict, Description: "The request conflicts with the current state."}
	ErrTooLarge               = &Error{Code: "invalid_request", Status: http.StatusRequestEntityTooLarge, Description: "The request body is too large."}
	ErrUnsupportedMediaType   = &Error{Code: "invalid_request", Status: http.StatusUnsupportedMediaType, Description: "Unsupported content type."}
	ErrRateLimited            = &Error{Code: "rate_limited", Status: http.StatusTooManyRequests, Description: "Too many requests; try again later."}
	ErrTemporarilyUnavailable = &Error{Code: "temporarily_unavailable", Status: http.StatusServiceUnavailable, Description: "The service is temporarily unavailable; try again shortly."}
	ErrServer                 = &Error{Code: "server_error", Status: http.StatusInternalServerError, Description: "An internal error occurred."}
	ErrOneTimeTokenInvalid    = &Error{Code: "invalid_token", Status: http.StatusBadRequest, Description: "The link is invalid."}
	ErrRegistrationDisabled   = &Error{Code: "registration_disabled", Status: http.StatusForbidden, Description: "Public registration is disabled."}
	ErrPasswordChangeRequired = &Error{Code: "password_change_required", Status: http.StatusForbidden, Description: "The password must be changed first."}
)
