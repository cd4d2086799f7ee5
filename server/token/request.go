package token

import (
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// Grant types Portcullis supports.
const (
	GrantPassword          = "password"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
	// GrantMFAOTP and GrantMFARecoveryCode finish a password login that
	// answered mfa_required (contract, "Multi-factor authentication"). A
	// client is never registered with them: any client that has the
	// password grant may use them.
	GrantMFAOTP          = "urn:portcullis:params:oauth:grant-type:mfa-otp"
	GrantMFARecoveryCode = "urn:portcullis:params:oauth:grant-type:mfa-recovery-code"
)

// MFAGrants are the grants that finish a password login with a second factor.
var MFAGrants = []string{GrantMFAOTP, GrantMFARecoveryCode}

// SupportedGrants lists the grant types a client may be registered with.
var SupportedGrants = []string{GrantPassword, GrantRefreshToken, GrantClientCredentials, GrantAuthorizationCode, GrantTokenExchange}

// maxParamLen bounds every parameter (tokens included): no legitimate value comes near it.
const maxParamLen = 32 << 10

// ClientCredentials is how a client presented itself on a request.
type ClientCredentials struct {
	ID     string
	Secret string
	// Basic is true when the credentials came in the Authorization header.
	// (Every invalid_client answer carries WWW-Authenticate, however the
	// credentials came: apierr.ErrInvalidClient.)
	Basic bool
}

// TokenRequest is a parsed token endpoint request (RFC 6749 §4.3, §4.4, §6).
type TokenRequest struct {
	GrantType    string
	Client       ClientCredentials
	Username     string
	Password     string
	RefreshToken string
	// RefreshFromCookie is true when RefreshToken was read from the
	// refresh-token cookie, not sent in the body: that cookie is one for
	// every cookie client, so it may hold another app's token, presented
	// without the client's doing (refreshGrant).
	RefreshFromCookie bool
	// Code, RedirectURI and CodeVerifier are the authorization_code grant's
	// parameters (RFC 6749 §4.1.3, RFC 7636 §4.5); RedirectURI is "" when
	// not sent.
	Code         string
	RedirectURI  string
	CodeVerifier string
	// MFAToken and MFACode are the MFA grants' parameters: the mfa_token of
	// the password step and the otp or recovery_code.
	MFAToken string
	MFACode  string
	Scope    []string // requested scope tokens, nil when absent or empty
	// SubjectToken and SubjectTokenType are the token-exchange grant's
	// (RFC 8693 §2.1).
	SubjectToken     string
	SubjectTokenType string
	// Tenant is the `tenant` parameter: the slug of the organisation a
	// login names (organisations on). A refresh ignores it.
	Tenant string
}

// ParseForm checks a form for repeated parameters (RFC 6749 §3.1: parameters
// MUST NOT be included more than once, even without a value), oversize or
// non-UTF-8 values, and returns the single value of each parameter. A
// parameter sent without a value is left out, as if omitted (§3.2), so no
// later check can tell it from an absent one.
func ParseForm(form url.Values) (map[string]string, error) {
	out := make(map[string]string, len(form))
	for k, vs := range form {
		if len(vs) > 1 {
			return nil, apierr.ErrInvalidRequest.WithDescription("The parameter '%s' is included more than once.", SafeParamName(k))
		}
		if len(vs) == 0 || vs[0] == "" {
			continue
		}
		v := vs[0]
		if len(v) > maxParamLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return nil, apierr.ErrInvalidRequest.WithDescription("The parameter '%s' is too long or not valid UTF-8.", SafeParamName(k))
		}
		out[k] = v
	}
	return out, nil
}

// SafeParamName makes a parameter name safe to echo in a description or on
// a page (at most 40 characters of valid UTF-8, no control characters,
// quotes or backslashes).
func SafeParamName(k string) string {
	if len(k) > 40 || !utf8.ValidString(k) {
		return "(unnamed)"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, k)
}

// ClientFromRequest extracts client credentials from HTTP Basic (form-decoded
// per RFC 6749 §2.3.1) or from client_id/client_secret form parameters.
// Using both methods at once is invalid_request (§2.3). A request carrying
// client_assertion or client_assertion_type (RFC 7521 §4.2) uses a method
// discovery does not advertise: it is invalid_client, never taken for the
// secret beside it or for a public client's none.
func ClientFromRequest(basicUser, basicPass string, hasBasic bool, params map[string]string) (ClientCredentials, error) {
	if _, ok := params["client_assertion"]; ok {
		return ClientCredentials{}, errUnsupportedClientAuth
	}
	if _, ok := params["client_assertion_type"]; ok {
		return ClientCredentials{}, errUnsupportedClientAuth
	}
	formID, formSecret := params["client_id"], params["client_secret"]
	if hasBasic {
		if formSecret != "" {
			return ClientCredentials{}, apierr.ErrInvalidRequest.WithDescription("The client used more than one authentication method.")
		}
		id, err1 := url.QueryUnescape(basicUser)
		secret, err2 := url.QueryUnescape(basicPass)
		if err1 != nil || err2 != nil || id == "" {
			return ClientCredentials{}, apierr.ErrInvalidClient.WithDescription("Malformed client credentials.")
		}
		if formID != "" && formID != id {
			return ClientCredentials{}, apierr.ErrInvalidRequest.WithDescription("client_id does not match the authenticated client.")
		}
		return ClientCredentials{ID: id, Secret: secret, Basic: true}, nil
	}
	if formID == "" {
		return ClientCredentials{}, apierr.ErrInvalidClient.WithDescription("Client authentication is required.")
	}
	return ClientCredentials{ID: formID, Secret: formSecret}, nil
}

// errUnsupportedClientAuth refuses a client assertion: Portcullis supports
// client_secret_basic, client_secret_post and none only.
var errUnsupportedClientAuth = apierr.ErrInvalidClient.WithDescription(
	"Unsupported client authentication method: use client_secret_basic, client_secret_post or none, not a client assertion.")

// ParseTokenRequest builds a TokenRequest from the form parameters and the
// client's credentials. It checks shape only; grants check meaning.
func ParseTokenRequest(params map[string]string, client ClientCredentials) (TokenRequest, error) {
	req := TokenRequest{GrantType: params["grant_type"], Client: client, Tenant: params["tenant"]}
	if req.GrantType == "" {
		return req, apierr.ErrInvalidRequest.WithDescription("The grant_type parameter is missing.")
	}
	if raw, ok := params["scope"]; ok {
		scopes, err := ParseScope(raw)
		if err != nil {
			return req, err
		}
		req.Scope = scopes
	}
	h, ok := grantRegistry[req.GrantType]
	if !ok {
		return req, apierr.ErrUnsupportedGrantType.WithDescription("The grant type '%s' is not supported.", SafeParamName(req.GrantType))
	}
	return h.parse(params, req)
}

// ParseScope splits a scope parameter (RFC 6749 §3.3: space-delimited
// NQCHAR tokens) and rejects characters outside that set.
func ParseScope(raw string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, s := range strings.Split(raw, " ") {
		if s == "" {
			continue
		}
		for _, r := range s {
			if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
				return nil, apierr.ErrInvalidScope.WithDescription("The scope contains characters RFC 6749 does not allow.")
			}
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}
