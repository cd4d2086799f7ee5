package token

import (
	"errors"
	"testing"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// TestOrganisationClientWithOrganisationsOff: a client of an organisation
// logs in only to it, so with organisations off its logins get nothing
// (unauthorized_client, as its client_credentials tokens), never a
// platform token of the user's platform roles; a platform client logs in
// as before.
func TestOrganisationClientWithOrganisationsOff(t *testing.T) {
	for _, tc := range []struct {
		name, client string
		want         *apierr.Error // nil: tokens
	}{
		{"ok/platform_client", "web", nil},
		{"fail/organisation_client", "orgweb", apierr.ErrUnauthorizedClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "EdDSA") // no tenancy: organisations off
			web := e.dir.clients["web"]
			web.ID, web.TenantID = "orgweb", "t-acme"
			e.dir.clients["orgweb"] = web
			code, _ := e.putCode(t, func(c *AuthCode) { c.ClientID = tc.client })
			resp, err := e.exchange(codeRequest(tc.client, code))
			if tc.want == nil {
				if err != nil || resp.AccessToken == "" {
					t.Fatalf("platform client: %v", err)
				}
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != tc.want.Code || resp.AccessToken != "" {
				t.Fatalf("organisation client with organisations off: %v, token %t; want %s", err, resp.AccessToken != "", tc.want.Code)
			}
			if fams := len(e.state.fams); fams != 0 {
				t.Fatalf("%d refresh families made for a refused login", fams)
			}
		})
	}
}
