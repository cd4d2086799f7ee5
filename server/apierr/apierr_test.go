package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

func TestChallenge(t *testing.T) {
	cases := []struct {
		name string
		err  *Error
		want string
	}{
		{"invalid token", ErrInvalidToken, `Bearer error="invalid_token"`},
		{"invalid token keeps its challenge through builders", ErrInvalidToken.WithDescription("revoked").WithCause(errors.New("x")).WithStatus(401), `Bearer error="invalid_token"`},
		{"insufficient scope names the scope", ErrInsufficientScope.WithRequiredScope("keys:rotate"), `Bearer error="insufficient_scope", scope="keys:rotate"`},
		{"scope is kept to RFC 6750 characters", ErrInsufficientScope.WithRequiredScope("a\"b\\c\nd"), `Bearer error="insufficient_scope", scope="abcd"`},
		{"no token: realm only (RFC 6750 §3.1)", ErrUnauthorized, `Bearer realm="portcullis"`},
		{"invalid client: Basic, however it sent its credentials (RFC 9110 §15.5.2)", ErrInvalidClient, `Basic realm="portcullis"`},
		{"invalid client keeps its challenge through builders", ErrInvalidClient.WithDescription("Client authentication is required."), `Basic realm="portcullis"`},
		{"one-time link token is not a bearer token", ErrOneTimeTokenInvalid, ""},
		{"forbidden", ErrForbidden, ""},
		{"challenge can be removed", ErrInvalidToken.Challenging(NoChallenge), ""},
		{"step-up (RFC 9470): a recent login", ErrInsufficientUserAuthentication.WithDescription("Sign in again.").WithStepUp(5*time.Minute, ""),
			`Bearer error="insufficient_user_authentication", error_description="Sign in again.", max_age="300"`},
		{"step-up (RFC 9470): a second factor", ErrInsufficientUserAuthentication.WithDescription(`Use "mfa".`).WithStepUp(0, "mfa"),
			`Bearer error="insufficient_user_authentication", error_description="Use mfa.", acr_values="mfa"`},
		{"step-up (RFC 9470): both", ErrInsufficientUserAuthentication.WithStepUp(5*time.Minute, "mfa"),
			`Bearer error="insufficient_user_authentication", error_description="This request needs a more recent or stronger sign-in.", max_age="300", acr_values="mfa"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Challenge(); got != tc.want {
				t.Fatalf("Challenge() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBuildersDoNotMutateSentinels(t *testing.T) {
	_ = ErrInvalidClient.Challenging(NoChallenge)
	_ = ErrInsufficientScope.WithRequiredScope("x")
	if ErrInvalidClient.Challenge() != `Basic realm="portcullis"` || ErrInsufficientScope.Challenge() != `Bearer error="insufficient_scope"` {
		t.Fatal("a builder changed a sentinel")
	}
}

// TestMFABody: an mfa_required answer carries its members beside error and
// error_description; every other error's body has only those two.
func TestMFABody(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *Error
		want string
	}{
		{"ok/challenge", ErrMFARequired.WithDescription("Second factor.").WithMFA(MFAChallenge{Token: "tok", Methods: []string{"totp", "recovery_code"}}),
			`{"error":"mfa_required","error_description":"Second factor.","mfa_token":"tok","mfa_enrollment_required":false,"mfa_methods":["totp","recovery_code"]}`},
		{"ok/enrolment_required", ErrMFARequired.WithMFA(MFAChallenge{Token: "tok", EnrollmentRequired: true}),
			`{"error":"mfa_required","error_description":"A second factor is required to finish signing in.","mfa_token":"tok","mfa_enrollment_required":true,"mfa_methods":[]}`},
		{"ok/plain_error", ErrInvalidGrant, `{"error":"invalid_grant","error_description":"The grant is invalid, expired or revoked."}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.err.Body())
			if err != nil || string(got) != tc.want {
				t.Fatalf("body %s (%v), want %s", got, err, tc.want)
			}
		})
	}
	_ = ErrMFARequired.WithMFA(MFAChallenge{Token: "x"})
	if ErrMFARequired.MFA() != nil {
		t.Fatal("WithMFA changed the sentinel")
	}
}

// TestBodyDescriptionCharset: every JSON error's error_description keeps to
// RFC 6749 §5.2's %x20-21 / %x23-5B / %x5D-7E, whatever text it was given
// (a quoted name, a backslash, non-ASCII, a control character).
func TestBodyDescriptionCharset(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ok/plain", "The grant is invalid.", "The grant is invalid."},
		{"ok/single quotes stay", "Scope 'x:y': no.", "Scope 'x:y': no."},
		{"stripped/double quotes", `The grant type "urn:x" is not supported.`, "The grant type urn:x is not supported."},
		{"stripped/backslash and non-ASCII", "urn:x:\u00e9\\y\n", "urn:x:y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrInvalidRequest.WithDescription("%s", tc.in).Body().ErrorDescription; got != tc.want {
				t.Fatalf("Body().ErrorDescription = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSentence: a reason becomes an error_description, trimmed,
// capitalised and ending with one full stop.
func TestSentence(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"  ", ""},
		{"scope x: not a permission", "Scope x: not a permission."},
		{"Already a sentence.", "Already a sentence."},
		{" élan needed ", "Élan needed."},
	} {
		if got := Sentence(tc.in); got != tc.want {
			t.Errorf("Sentence(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFromStore: a store failure becomes the right answer, and an answer
// already decided passes through.
func TestFromStore(t *testing.T) {
	gone := ErrInvalidRequest.WithDescription("No such thing.")
	decided := ErrForbidden.WithDescription("No.")
	for _, tc := range []struct {
		name     string
		err      error
		notFound error
		want     *Error
	}{
		{"missing_record", fmt.Errorf("get: %w", store.ErrNotFound), gone, gone},
		{"missing_record_without_an_answer_is_500", fmt.Errorf("get: %w", store.ErrNotFound), nil, ErrServer},
		{"unreachable_is_503", fmt.Errorf("get: %w", store.ErrUnavailable), gone, ErrTemporarilyUnavailable},
		{"anything_else_is_500", errors.New("disk on fire"), gone, ErrServer},
		{"a_decided_answer_passes", decided, gone, decided},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *Error
			if !errors.As(FromStore("get", tc.err, tc.notFound), &got) || got.Code != tc.want.Code || got.Status != tc.want.Status {
				t.Fatalf("FromStore = %v, want %v", got, tc.want)
			}
		})
	}
}
