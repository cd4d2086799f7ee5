package token

import (
	"context"
	"errors"
	"testing"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

// staleSigner is a signer whose keys cannot be used now (keys.ErrStale or
// keys.ErrNotReady) once err is set.
type staleSigner struct {
	fakeSigner
	err error
}

func (s *staleSigner) Sign(claims any, typ string) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	return s.fakeSigner.Sign(claims, typ)
}

func (s *staleSigner) Usable() error { return s.err }

func (s *staleSigner) VerifyTyped(tok, want string) ([]byte, string, error) {
	if s.err != nil {
		return nil, "", s.err
	}
	return s.fakeSigner.VerifyTyped(tok, want)
}

// TestUnusableKeysAnswerUnavailable: while this instance's signing keys
// cannot be used (not reloaded for too long, or not loaded), every check of
// a token and every issuance answers 503: a token is neither judged
// invalid (401, "inactive", "nothing to revoke", which a client would act
// on) nor accepted.
func TestUnusableKeysAnswerUnavailable(t *testing.T) {
	for _, cause := range []error{keys.ErrStale, keys.ErrNotReady} {
		t.Run(cause.Error(), func(t *testing.T) {
			e := newCodeEnv(t, "EdDSA")
			signer := &staleSigner{fakeSigner: fakeSigner{alg: "EdDSA"}}
			e.svc.signer = signer
			code, _ := e.putCode(t, nil)
			resp, err := e.exchange(codeRequest("web", code))
			if err != nil {
				t.Fatal(err)
			}
			signer.err = cause
			ctx := context.Background()
			cred := ClientCredentials{ID: "web", Secret: "s3cret"}
			for name, call := range map[string]func() error{
				"bearer": func() error { _, err := e.svc.AuthenticateBearer(ctx, resp.AccessToken); return err },
				"introspection": func() error {
					_, err := e.svc.Introspect(ctx, cred, resp.AccessToken)
					return err
				},
				"revocation": func() error { return e.svc.Revoke(ctx, cred, resp.AccessToken, RequestMeta{}) },
				"issuance": func() error {
					code, _ := e.putCode(t, nil)
					_, err := e.exchange(codeRequest("web", code))
					return err
				},
				"id_token_hint": func() error { _, err := e.svc.ParseIDTokenHint(resp.IDToken); return err },
			} {
				var ae *apierr.Error
				if err := call(); !errors.As(err, &ae) || ae.Code != apierr.ErrTemporarilyUnavailable.Code {
					t.Errorf("%s with unusable keys: %v, want temporarily_unavailable", name, err)
				}
			}
		})
	}
}

// TestUnusableKeysSpendNothing: while the keys cannot sign, a grant spends
// nothing it would need again (a refresh token's rotation, a code): it
// answers 503 first, and once the keys are back the same refresh token
// and the same code work. Before, the refresh rotated, could not sign, and
// the client's retry counted as reuse, ending the session.
func TestUnusableKeysSpendNothing(t *testing.T) {
	e := newCodeEnv(t, "EdDSA")
	signer := &staleSigner{fakeSigner: fakeSigner{alg: "EdDSA"}}
	e.svc.signer = signer
	code, _ := e.putCode(t, nil)
	resp, err := e.exchange(codeRequest("web", code))
	if err != nil {
		t.Fatal(err)
	}
	refresh := TokenRequest{GrantType: GrantRefreshToken, Client: ClientCredentials{ID: "web", Secret: "s3cret"}, RefreshToken: resp.RefreshToken}
	next, _ := e.putCode(t, nil)
	signer.err = keys.ErrStale
	for name, req := range map[string]TokenRequest{"refresh": refresh, "code": codeRequest("web", next)} {
		var ae *apierr.Error
		if _, err := e.exchange(req); !errors.As(err, &ae) || ae.Code != apierr.ErrTemporarilyUnavailable.Code {
			t.Fatalf("%s with stale keys: %v, want temporarily_unavailable", name, err)
		}
	}
	signer.err = nil
	if _, err := e.exchange(refresh); err != nil {
		t.Fatalf("the refresh token once the keys are back: %v", err)
	}
	if _, err := e.exchange(codeRequest("web", next)); err != nil {
		t.Fatalf("the code once the keys are back: %v", err)
	}
}
