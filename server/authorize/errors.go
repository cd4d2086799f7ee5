package authorize

import (
	"fmt"
	"net/http"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// Error codes of the authorization endpoint (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6).
const (
	ErrInvalidRequest           = "invalid_request"
	ErrUnauthorizedClient       = "unauthorized_client"
	ErrAccessDenied             = "access_denied"
	ErrUnsupportedResponseType  = "unsupported_response_type"
	ErrInvalidScope             = "invalid_scope"
	ErrServerError              = "server_error"
	ErrTemporarilyUnavailable   = "temporarily_unavailable"
	ErrLoginRequired            = "login_required"
	ErrConsentRequired          = "consent_required"
	ErrInteractionRequired      = "interaction_required"
	ErrAccountSelectionRequired = "account_selection_required"
	ErrRequestNotSupported      = "request_not_supported"
	ErrRequestURINotSupported   = "request_uri_not_supported"
	ErrRegistrationNotSupported = "registration_not_supported"
)

// PageError is a failure that must not be redirected (a repeated parameter,
// an oversize request, an unknown client or redirect URI, an expired pending
// request without its tombstone): the HTTP layer answers an HTML error page
// with Status. Message is a sentence for a person; it never lists the
// client's registered URIs.
type PageError struct {
	Status  int
	Message string
	cause   error
}

// Error implements error (the cause is for logs only).
func (e *PageError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("authorize page error %d: %s: %v", e.Status, e.Message, e.cause)
	}
	return fmt.Sprintf("authorize page error %d: %s", e.Status, e.Message)
}

// Unwrap returns the cause.
func (e *PageError) Unwrap() error { return e.cause }

func pageError(msg string) *PageError { return &PageError{Status: http.StatusBadRequest, Message: msg} }

// RedirectError is a failure delivered to the client at RedirectURI
// (RFC 6749 §4.1.2.1) in Mode, with error, error_description, state (byte
// for byte as received) and iss (RFC 9207). Response builds the answer;
// one answering a request that waited (pending, or expired) is sent only
// after CheckRedirect(ClientID, RedirectURI, MadeAt).
type RedirectError struct {
	// ClientID is the client whose request this answers ("" only in a
	// RedirectError built by hand: CheckRedirect then refuses it).
	ClientID string
	// MadeAt is when that request was made (Request.MadeAt; zero in one
	// built by hand: CheckRedirect then refuses it).
	MadeAt      time.Time
	RedirectURI string
	Mode        string // ModeQuery or ModeFormPost
	Code        string
	Description string
	State       string
	Issuer      string
}

// Error implements error.
func (e *RedirectError) Error() string {
	return "authorize redirect error: " + e.Code + ": " + e.Description
}

// Response is the HTTP answer carrying the error to the client.
func (e *RedirectError) Response() Response {
	p := [][2]string{{"error", e.Code}}
	if d := apierr.SafeText(e.Description); d != "" {
		p = append(p, [2]string{"error_description", d})
	}
	return respond(e.RedirectURI, e.Mode, e.State, e.Issuer, p)
}
