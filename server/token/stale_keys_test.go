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
			} {
				var ae *apierr.Error
				if err := call(); !errors.As(err, &ae) || ae.Code != apierr.ErrTemporarilyUnavailable.Code {
					t.Errorf("%s with unusable keys: %v, want temporarily_unavailable", name, err)
				}
			}
		})
	}
}
