package apierr

import (
	"errors"
	"testing"
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
		{"client used Basic", ErrInvalidClient.Challenging(Basic), `Basic realm="portcullis"`},
		{"client used the form: none", ErrInvalidClient, ""},
		{"one-time link token is not a bearer token", ErrOneTimeTokenInvalid, ""},
		{"forbidden", ErrForbidden, ""},
		{"challenge can be removed", ErrInvalidToken.Challenging(NoChallenge), ""},
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
	_ = ErrInvalidClient.Challenging(Basic)
	_ = ErrInsufficientScope.WithRequiredScope("x")
	if ErrInvalidClient.Challenge() != "" || ErrInsufficientScope.Challenge() != `Bearer error="insufficient_scope"` {
		t.Fatal("a builder changed a sentinel")
	}
}
