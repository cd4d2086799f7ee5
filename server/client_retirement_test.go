package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestDeletedClientsNamesStayRetired: a deleted client's access and id
// tokens live on (offline JWTs) until they expire, so for the server's
// revocation horizon no client may be created under an audience the
// deleted client listed (its access tokens would verify, with go-oidc, as
// that client's id tokens), nor list the deleted client's id among its
// audiences (its access tokens would pass as the deleted client's id
// tokens at the deleted client's relying party). Both are refused with
// 400 invalid_request saying until when the name is retired; the deleted
// id itself may be taken again, and a retired audience may be listed
// again. Found by a review (the attack: an organisation admin creates
// "evil" listing audience "victim", users sign in to evil, evil is
// deleted, someone creates "victim", evil's tokens sign those users in at
// victim's relying party): before the change "victim" was created and
// evil's access token verified as its id token.
func TestDeletedClientsNamesStayRetired(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, backend))
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			fx.User(t, rootEmail, rootPass, "super_admin")
			const alice, alicePass = "alice@example.com", "alice password for tests 1"
			fx.User(t, alice, alicePass)
			secret := fx.AdminClient(t, "console")
			root := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), st.Basic("console", secret)).Token().AccessToken
			prov, err := oidc.NewProvider(t.Context(), in.Config.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			pw := func(id string, audiences ...string) map[string]any {
				body := map[string]any{"client_id": id, "name": id, "grants": []string{"password"}}
				if audiences != nil {
					body["audiences"] = audiences
				}
				return body
			}
			create := func(body map[string]any) *st.Response {
				return c.PostJSON("/admin/clients", body, st.Bearer(root))
			}
			// tokens creates a client from body, signs alice in to it and
			// deletes it, returning her access and id tokens.
			tokens := func(t *testing.T, body map[string]any) (access, id string) {
				t.Helper()
				resp := create(body)
				resp.ExpectStatus(http.StatusCreated)
				sec := resp.Map()["client_secret"].(string)
				tok := c.PostForm("/oauth2/token", st.PasswordForm(alice, alicePass, "openid"), st.Basic(body["client_id"].(string), sec)).Token()
				c.Delete("/admin/clients/"+body["client_id"].(string), st.Bearer(root)).ExpectStatus(http.StatusNoContent)
				return tok.AccessToken, tok.IDToken
			}

			t.Run("fail/a deleted client's audience as a new client id", func(t *testing.T) {
				at, _ := tokens(t, pw("evil", "victim"))
				resp := create(pw("victim"))
				if resp.StatusCode == http.StatusCreated {
					if idt, err := prov.Verifier(&oidc.Config{ClientID: "victim"}).Verify(t.Context(), at); err == nil {
						t.Errorf("an access token of deleted client evil verifies as an id token of client victim (sub %s, aud %v)", idt.Subject, idt.Audience)
					}
					t.Fatalf("client victim created while evil's access tokens (aud victim) live")
				}
				expectRetired(t, resp)
			})
			t.Run("fail/a deleted client's id as a new audience", func(t *testing.T) {
				_, idt := tokens(t, pw("relying"))
				if _, err := prov.Verifier(&oidc.Config{ClientID: "relying"}).Verify(t.Context(), idt); err != nil {
					t.Fatalf("relying's own id token does not verify: %v", err)
				}
				resp := create(pw("evil2", "relying"))
				if resp.StatusCode == http.StatusCreated {
					sec := resp.Map()["client_secret"].(string)
					at := c.PostForm("/oauth2/token", st.PasswordForm(alice, alicePass, ""), st.Basic("evil2", sec)).Token().AccessToken
					if _, err := prov.Verifier(&oidc.Config{ClientID: "relying"}).Verify(t.Context(), at); err == nil {
						t.Errorf("an access token of evil2 verifies as an id token of deleted client relying")
					}
					t.Fatalf("client evil2 listing deleted client relying created while relying's id tokens live")
				}
				expectRetired(t, resp)
			})
			t.Run("ok/the deleted id again and the retired audience listed again", func(t *testing.T) {
				tokens(t, pw("again", "shared-api"))
				create(pw("again")).ExpectStatus(http.StatusCreated)
				create(pw("lister", "shared-api")).ExpectStatus(http.StatusCreated)
			})
		})
	}
}

// expectRetired checks a refusal of a retired name: 400 invalid_request
// saying until when.
func expectRetired(t *testing.T, resp *st.Response) {
	t.Helper()
	resp.ExpectError(http.StatusBadRequest, "invalid_request")
	if d, _ := resp.Map()["error_description"].(string); !strings.Contains(d, "retired until") {
		t.Errorf("error_description %q does not say until when the name is retired", d)
	}
}
