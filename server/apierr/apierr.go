// Package apierr is Portcullis's one error type for HTTP answers: an OAuth
// 2.0 style error (RFC 6749 §5.2, RFC 6750 §3) with a code, a description
// for a person, an HTTP status and a wrapped cause that is logged, never sent.
//
// Sentinels are never mutated: the With… builders return copies. The server's
// HTTP error handler is the single place these become responses.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/store"
)

// Error is an error answered to a client as
// {"error": Code, "error_description": Description} with Status.
type Error struct {
	Code        string
	Description string
	Status      int
	// RetryAfterSeconds, when positive, is sent as Retry-After.
	RetryAfterSeconds int
	// scheme and scope make the WWW-Authenticate challenge (see Challenge).
	scheme Scheme
	scope  string
	cause  error
	// mfa, when set, adds the members of an mfa_required answer to the body.
	mfa *MFAChallenge
	// maxAge and acrValues are the RFC 9470 parameters of an
	// insufficient_user_authentication challenge (see WithStepUp).
	maxAge    time.Duration
	acrValues string
}

// MFAChallenge is what an mfa_required answer adds to the error body: the
// single-use token that carries the correct password to its second factor
// and what that token allows (contract, "Multi-factor authentication").
type MFAChallenge struct {
	Token              string   `json:"mfa_token,omitempty"`
	EnrollmentRequired bool     `json:"mfa_enrollment_required"`
	Methods            []string `json:"mfa_methods"`
}

// Scheme is the authentication scheme an error challenges the client with.
type Scheme uint8

// Challenge schemes.
const (
	// NoChallenge sends no WWW-Authenticate header.
	NoChallenge Scheme = iota
	// Bearer challenges for an RFC 6750 bearer access token.
	Bearer
	// Basic challenges for HTTP Basic client authentication (RFC 6749 §2.3.1, §5.2).
	Basic
)

// Realm is the realm of Portcullis's challenges.
const Realm = "portcullis"

// rfc6750Codes are the error codes RFC 6750 §3.1 defines for a bearer
// challenge, and RFC 9470's insufficient_user_authentication.
var rfc6750Codes = map[string]bool{"invalid_request": true, "invalid_token": true, "insufficient_scope": true,
	codeInsufficientUserAuthentication: true}

// codeInsufficientUserAuthentication is RFC 9470's error code.
const codeInsufficientUserAuthentication = "insufficient_user_authentication"

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

// WithMFA returns a copy whose body carries the members of an mfa_required
// answer (Body.MFA).
func (e *Error) WithMFA(m MFAChallenge) *Error {
	c := *e
	if m.Methods == nil {
		m.Methods = []string{}
	}
	c.mfa = &m
	return &c
}

// MFA returns the mfa_required members the error carries (nil for none).
func (e *Error) MFA() *MFAChallenge { return e.mfa }

// Challenging returns a copy that challenges with scheme (sent as
// WWW-Authenticate, NoChallenge for none). invalid_token,
// insufficient_scope and the no-token 401 challenge with Bearer already,
// invalid_client with Basic.
func (e *Error) Challenging(scheme Scheme) *Error {
	c := *e
	c.scheme = scheme
	return &c
}

// WithRequiredScope returns a copy whose Bearer challenge names the scope the
// request needs (RFC 6750 §3, insufficient_scope).
func (e *Error) WithRequiredScope(scope string) *Error {
	c := *e
	c.scope = scope
	return &c
}

// WithStepUp returns a copy whose insufficient_user_authentication
// challenge (RFC 9470 §3) says what login would do: one at most maxAge old
// (max_age, in seconds; 0 for no bound) and with the authentication
// context classes acrValues ("" for any).
func (e *Error) WithStepUp(maxAge time.Duration, acrValues string) *Error {
	c := *e
	c.maxAge, c.acrValues = maxAge, acrValues
	return &c
}

// Challenge is the one place a WWW-Authenticate value is built ("" for none).
// A Bearer challenge of an RFC 6750 error always carries the error code (and
// the required scope when one is set): `Bearer error="invalid_token"`,
// `Bearer error="insufficient_scope", scope="keys:rotate"`. One of RFC
// 9470's insufficient_user_authentication carries, as keys/verify's does,
// its error_description and what would do (WithStepUp):
// `Bearer error="insufficient_user_authentication", error_description="…",
// max_age="300", acr_values="mfa"`. A Bearer
// challenge without an RFC 6750 code (no token was presented, RFC 6750 §3.1)
// carries only the realm; so does Basic.
func (e *Error) Challenge() string {
	switch e.scheme {
	case Bearer:
		if !rfc6750Codes[e.Code] {
			return `Bearer realm="` + Realm + `"`
		}
		v := `Bearer error="` + e.Code + `"`
		if e.scope != "" {
			v += `, scope="` + SafeText(e.scope) + `"`
		}
		if e.Code == codeInsufficientUserAuthentication {
			v += `, error_description="` + SafeText(e.Description) + `"`
			if e.maxAge > 0 {
				v += `, max_age="` + strconv.FormatInt(int64(e.maxAge/time.Second), 10) + `"`
			}
			if e.acrValues != "" {
				v += `, acr_values="` + SafeText(e.acrValues) + `"`
			}
		}
		return v
	case Basic:
		return `Basic realm="` + Realm + `"`
	}
	return ""
}

// SafeText keeps only the characters OAuth allows in error_description
// (RFC 6749 §4.1.2.1, §5.2) and in a challenge's quoted values (RFC 6750
// §3): %x20-21 / %x23-5B / %x5D-7E, that is printable ASCII without '"'
// and the backslash.
func SafeText(v string) string {
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if c := v[i]; c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b = append(b, c)
		}
	}
	return string(b)
}

// FromStore answers a store failure of the operation what: err itself when
// it is already an *Error, notFound when the record is missing (and
// notFound is not nil), 503 temporarily_unavailable when the store cannot
// be reached (store.ErrUnavailable), 500 otherwise. The cause is kept for
// the log, never sent.
func FromStore(what string, err, notFound error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, store.ErrNotFound) && notFound != nil:
		return notFound
	case errors.Is(err, store.ErrUnavailable):
		return ErrTemporarilyUnavailable.WithCause(fmt.Errorf("%s: %w", what, err))
	}
	return ErrServer.WithCause(fmt.Errorf("%s: %w", what, err))
}

// ClientGone reports whether the client of a request with context ctx went
// away before the answer (closed the connection, reset the stream): the
// request's context is cancelled, not timed out. Whatever failed then was
// cut short by that, so the error is not a fault of the server's: the one
// error handler records it as 499 (server.StatusClientClosedRequest), and
// the pages, which render their own errors, leave it to that handler.
func ClientGone(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

// Sentence makes a reason (an error's text, such as a policy rule's) an
// error_description: trimmed, capitalised, ending with a full stop.
func Sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
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
	// MFA, when set, puts the mfa_required members beside error (inline).
	*MFAChallenge
}

// Body returns the JSON body for the client. It is the one writer of a JSON
// error, so it is where error_description is made to keep to RFC 6749
// §5.2's characters (SafeText): a description naming what the client sent
// cannot carry a double quote, a backslash or non-ASCII to the client.
func (e *Error) Body() Body {
	return Body{Error: e.Code, ErrorDescription: SafeText(e.Description), MFAChallenge: e.mfa}
}

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
// ErrInvalidClient challenges with Basic whatever way the client sent its
// credentials (HTTP Basic, the form body, none): a 401 must carry
// WWW-Authenticate (RFC 9110 §15.5.2), so every copy of it, on every
// endpoint that authenticates clients, carries one.
var (
	ErrInvalidRequest       = &Error{Code: "invalid_request", Status: http.StatusBadRequest, Description: "The request is malformed."}
	ErrInvalidClient        = &Error{Code: "invalid_client", Status: http.StatusUnauthorized, Description: "Client authentication failed.", scheme: Basic}
	ErrInvalidGrant         = &Error{Code: "invalid_grant", Status: http.StatusBadRequest, Description: "The grant is invalid, expired or revoked."}
	ErrUnauthorizedClient   = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest, Description: "The client may not use this grant type."}
	ErrUnsupportedGrantType = &Error{Code: "unsupported_grant_type", Status: http.StatusBadRequest, Description: "The grant type is not supported."}
	ErrUnsupportedTokenType = &Error{Code: "unsupported_token_type", Status: http.StatusBadRequest, Description: "The token type is not supported."}
	ErrInvalidScope         = &Error{Code: "invalid_scope", Status: http.StatusBadRequest, Description: "The requested scope is invalid."}
	ErrInvalidToken         = &Error{Code: "invalid_token", Status: http.StatusUnauthorized, Description: "The access token is invalid, expired or revoked.", scheme: Bearer}
	ErrInsufficientScope    = &Error{Code: "insufficient_scope", Status: http.StatusForbidden, Description: "The access token lacks the required permission.", scheme: Bearer}
	// ErrInsufficientUserAuthentication (RFC 9470): the token is valid but
	// its login is not recent enough, or lacks a second factor, for the
	// request; WithStepUp says what would do.
	ErrInsufficientUserAuthentication = &Error{Code: codeInsufficientUserAuthentication, Status: http.StatusUnauthorized,
		Description: "This request needs a more recent or stronger sign-in.", scheme: Bearer}
	ErrUnauthorized           = &Error{Code: "unauthorized", Status: http.StatusUnauthorized, Description: "Authentication is required.", scheme: Bearer}
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
	// ErrMFARequired is a correct password that needs a second factor (or
	// an enrolment) before any token; add the members with WithMFA.
	ErrMFARequired            = &Error{Code: "mfa_required", Status: http.StatusBadRequest, Description: "A second factor is required to finish signing in."}
	ErrPasswordChangeRequired = &Error{Code: "password_change_required", Status: http.StatusForbidden, Description: "The password must be changed first."}
)
