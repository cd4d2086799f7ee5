package verify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
)

// maxLogoutRequestBody bounds the form a logout endpoint reads.
const maxLogoutRequestBody = 2 * MaxTokenSize

// LogoutHandler returns the http.Handler of a relying party's back-channel
// logout endpoint (BCL §2.5, §2.8): it takes a form POST with one
// logout_token, verifies it with v, and calls onLogout with the claims. It
// answers 200 with Cache-Control: no-store when onLogout succeeded, and 400
// {"error":"invalid_request","error_description":…} otherwise (a refused
// token, or onLogout's error; the token may then be sent again). It never
// logs or echoes the token.
func LogoutHandler(v *LogoutVerifier, onLogout func(ctx context.Context, c *LogoutClaims) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeLogoutError(w, http.StatusMethodNotAllowed, "Send the logout token in a POST.")
			return
		}
		token, desc := logoutTokenOf(w, r)
		if desc != "" {
			writeLogoutError(w, http.StatusBadRequest, desc)
			return
		}
		c, err := v.Verify(r.Context(), token)
		if err != nil {
			writeLogoutError(w, http.StatusBadRequest, logoutErrorDescription(err))
			return
		}
		if err := onLogout(r.Context(), c); err != nil {
			v.forget(c.ID)
			writeLogoutError(w, http.StatusBadRequest, "The logout could not be carried out; try again.")
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// logoutTokenOf reads the one logout_token of a form body; desc says what
// is wrong otherwise.
func logoutTokenOf(w http.ResponseWriter, r *http.Request) (token, desc string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return "", "Send an application/x-www-form-urlencoded body."
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLogoutRequestBody))
	if err != nil {
		return "", "The request body is too large or unreadable."
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", "The request body is not a valid form."
	}
	switch vals := form["logout_token"]; {
	case len(vals) == 0 || vals[0] == "":
		return "", "The logout_token parameter is missing."
	case len(vals) > 1:
		return "", "Send logout_token once."
	default:
		return vals[0], ""
	}
}

// logoutErrorDescription says why a logout token was refused, without any
// of its content.
func logoutErrorDescription(err error) string {
	for _, m := range []struct {
		err  error
		desc string
	}{
		{ErrKeySetUnavailable, "The issuer's keys cannot be fetched right now; try again."},
		{ErrReplayed, "The logout token was already used."},
		{ErrReplayCacheFull, "Too many logout tokens at once; try again."},
		{ErrExpired, "The logout token expired."},
		{ErrNotYetValid, "The logout token is not valid yet."},
		{ErrWrongAudience, "The logout token is not meant for this client."},
		{ErrWrongIssuer, "The logout token was issued by another issuer."},
		{ErrWrongType, "The token is not a logout token (typ is not logout+jwt)."},
		{ErrNotLogoutToken, "The token is not a logout token."},
		{ErrUnknownKey, "The logout token was signed by an unknown key."},
		{ErrBadSignature, "The logout token's signature is invalid."},
		{ErrMalformed, "The logout token is malformed."},
	} {
		if errors.Is(err, m.err) {
			return m.desc
		}
	}
	return "The logout token is invalid."
}

func writeLogoutError(w http.ResponseWriter, status int, desc string) {
	body, _ := json.Marshal(map[string]string{"error": "invalid_request", "error_description": desc})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
