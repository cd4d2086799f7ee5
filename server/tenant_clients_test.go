package server_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// demoPolicyEnv is a deployment with organisations on and the demo policy,
// whose admin holds "*" (every admin permission) inside an organisation.
func demoPolicyEnv(t *testing.T, backend st.Backend) *tenantEnv {
	t.Helper()
	policyFile, err := filepath.Abs("../docs/examples/demo-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return newTenantEnv(t, backend, map[string]string{"PORTCULLIS_POLICY_FILE": policyFile})
}

// TestTenantClientsNeverFirstPartyOrAdminAudience: only a platform actor
// makes a client first-party or lists the issuer among its audiences. An
// organisation's admin holding every permission there is refused both
// (403, nothing stored) when creating a client, and may not redirect the
// codes of, or take the secret of, an organisation's client that already
// is one; a platform admin does all of it.
func TestTenantClientsNeverFirstPartyOrAdminAudience(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := demoPolicyEnv(t, backend)
			a := e.createTenant(t, "acme")
			adminA := e.member(t, a, "admin-a@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			issuer := e.fx.Issuer()
			codeFlow := func(id string) map[string]any {
				return map[string]any{"client_id": id, "name": id, "grants": []string{"authorization_code"},
					"redirect_uris": []string{"https://app.example/cb"}}
			}
			with := func(m map[string]any, k string, v any) map[string]any { m[k] = v; return m }
			for _, tc := range []struct {
				name, tok string
				body      map[string]any
				want      int
			}{
				{"fail/org admin: first-party", tokA, with(codeFlow("acme-fp"), "first_party", true), http.StatusForbidden},
				{"fail/org admin: issuer audience", tokA, with(codeFlow("acme-aud"), "audiences", []string{issuer}), http.StatusForbidden},
				{"fail/org admin: issuer among other audiences", tokA, map[string]any{"client_id": "acme-cc", "name": "cc",
					"grants": []string{"client_credentials"}, "audiences": []string{"api", issuer}}, http.StatusForbidden},
				{"ok/org admin: third-party, another audience", tokA, with(codeFlow("acme-app"), "audiences", []string{"api"}), http.StatusCreated},
				{"ok/platform admin: first-party", e.rootTok, with(codeFlow("platform-fp"), "first_party", true), http.StatusCreated},
				{"ok/platform admin: issuer audience", e.rootTok, with(codeFlow("platform-aud"), "audiences", []string{issuer}), http.StatusCreated},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := e.in.Client(t).PostJSON("/admin/clients", tc.body, st.Bearer(tc.tok))
					id := tc.body["client_id"].(string)
					_, err := e.in.App.Core.Store.GetClient(t.Context(), id)
					if tc.want != http.StatusCreated {
						resp.ExpectError(tc.want, "forbidden")
						if !errors.Is(err, store.ErrNotFound) {
							t.Fatalf("refused client %s stored: %v", id, err)
						}
						return
					}
					resp.ExpectStatus(tc.want)
					if err != nil {
						t.Fatalf("client %s not stored: %v", id, err)
					}
				})
			}

			// Clients of acme that are first-party or list the issuer (made
			// before the rule): acme's admin may neither send their codes
			// elsewhere nor take their secret; a platform admin may.
			for _, spec := range []clients.Spec{
				{ID: "acme-old-fp", FirstParty: true},
				{ID: "acme-old-aud", Audiences: []string{issuer}},
			} {
				spec.Name, spec.TenantID = spec.ID, a
				spec.Grants, spec.RedirectURIs = []string{"authorization_code"}, []string{"https://app.example/cb"}
				e.fx.Client(t, spec)
			}
			svc := e.in.App.Accounts
			orgAdmin := accounts.Actor{ID: adminA.ID, Meta: accounts.Meta{Tenant: "acme"}}
			root, err := e.in.App.Core.Store.GetUserByEmail(t.Context(), rootEmail)
			if err != nil {
				t.Fatal(err)
			}
			platform := accounts.Actor{ID: root.ID}
			const evil = "https://evil.example/cb"
			for _, tc := range []struct {
				name   string
				actor  accounts.Actor
				client string
				want   error
			}{
				{"fail/org admin: first-party", orgAdmin, "acme-old-fp", apierr.ErrForbidden},
				{"fail/org admin: issuer audience", orgAdmin, "acme-old-aud", apierr.ErrForbidden},
				{"ok/org admin: third-party", orgAdmin, "acme-app", nil},
				{"ok/platform admin: acme's first-party", platform, "acme-old-fp", nil},
				{"ok/platform admin: platform first-party", platform, "platform-fp", nil},
				{"ok/platform admin: issuer audience", platform, "platform-aud", nil},
			} {
				t.Run("update/"+tc.name, func(t *testing.T) {
					before, err := e.in.App.Core.Store.GetClient(t.Context(), tc.client)
					if err != nil {
						t.Fatal(err)
					}
					_, errURIs := svc.SetClientRedirectURIs(t.Context(), tc.actor, tc.client, []string{evil})
					_, errSecret := svc.RotateClientSecret(t.Context(), tc.actor, tc.client)
					after, err := e.in.App.Core.Store.GetClient(t.Context(), tc.client)
					if err != nil {
						t.Fatal(err)
					}
					for what, err := range map[string]error{"redirect URIs": errURIs, "secret": errSecret} {
						if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
							t.Fatalf("%s: %v, want %v", what, err, tc.want)
						}
					}
					if tc.want != nil && (!slices.Equal(after.RedirectURIs, before.RedirectURIs) || !bytes.Equal(after.SecretHash, before.SecretHash)) {
						t.Fatalf("refused, yet changed: %+v -> %+v", before, after)
					}
				})
			}
		})
	}
}

// TestTenantAdminGetsNoSilentCodeOfAMember: an organisation's admin cannot
// turn its own client into a way of acting on a member's whole account.
// The member (who also administers another organisation) is signed in in
// their browser; the admin's client cannot be first-party, and as a
// third-party client a silent authorization (prompt=none) gets
// consent_required, never a code.
func TestTenantAdminGetsNoSilentCodeOfAMember(t *testing.T) {
	e := demoPolicyEnv(t, st.SQLite)
	a, b := e.createTenant(t, "acme"), e.createTenant(t, "globex")
	e.member(t, a, "admin-a@example.com", "admin")
	e.member(t, a, "shared@example.com", "viewer")
	e.member(t, b, "shared@example.com", "admin")
	tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken

	const evilCB = "https://evil.example/cb"
	spec := map[string]any{"client_id": "acme-sso", "name": "Acme SSO", "grants": []string{"authorization_code"},
		"redirect_uris": []string{evilCB}, "first_party": true}
	e.c.PostJSON("/admin/clients", spec, st.Bearer(tokA)).ExpectError(http.StatusForbidden, "forbidden")
	spec["first_party"] = false
	e.c.PostJSON("/admin/clients", spec, st.Bearer(tokA)).ExpectStatus(http.StatusCreated)

	// The member signs in through a platform app.
	e.fx.Client(t, clients.Spec{ID: "portal", Name: "Portal", Grants: []string{"authorization_code"},
		RedirectURIs: []string{siCallback}, FirstParty: true})
	hc := siBrowser(t)
	endpoint := oauth2.Endpoint{AuthURL: e.in.URL + "/oauth2/authorize", TokenURL: e.in.URL + "/oauth2/token"}
	portal := &oauth2.Config{ClientID: "portal", RedirectURL: siCallback, Scopes: []string{"openid"}, Endpoint: endpoint}
	login := siGet(t, hc, portal.AuthCodeURL("s0", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if done := login.submit(t, hc, url.Values{"username": {"shared@example.com"}, "password": {tenantPass}}); done.StatusCode != http.StatusSeeOther {
		t.Fatalf("member sign-in: %d %s", done.StatusCode, done.body)
	}

	evil := &oauth2.Config{ClientID: "acme-sso", RedirectURL: evilCB, Scopes: []string{"openid"}, Endpoint: endpoint}
	cb := siGet(t, hc, evil.AuthCodeURL("s1", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("prompt", "none")))
	loc, err := url.Parse(cb.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), evilCB+"?") {
		t.Fatalf("silent authorize: %d %q %s", cb.StatusCode, cb.Header.Get("Location"), cb.body)
	}
	if q := loc.Query(); q.Get("code") != "" || q.Get("error") != "consent_required" {
		t.Fatalf("silent authorize through acme's client: %s, want consent_required and no code", loc)
	}
}

// TestTenantClientExchangesNoAPIKey: a token exchanged from an API key acts
// in no organisation, and a client of an organisation issues tokens only
// in it, so such a client exchanges no key: invalid_grant while its
// organisation is active (as a login through it naming another
// organisation), unauthorized_client once it is turned off (as its
// client_credentials grant). A platform client still exchanges the key.
func TestTenantClientExchangesNoAPIKey(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			a := e.createTenant(t, "acme")
			e.member(t, a, "admin-a@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			secrets := map[string]string{}
			for id, tok := range map[string]string{"acme-x": tokA, "platform-x": e.rootTok} {
				var c struct {
					Secret string `json:"client_secret"`
				}
				e.c.PostJSON("/admin/clients", map[string]any{"client_id": id, "name": id,
					"grants": []string{"client_credentials", token.GrantTokenExchange}, "scopes": []string{"users:read"}},
					st.Bearer(tok)).ExpectStatus(http.StatusCreated).JSON(&c)
				secrets[id] = c.Secret
			}
			var k struct{ Key string }
			e.c.PostJSON("/auth/api-keys", map[string]any{"name": "k", "scopes": []string{"users:read"}}, st.Bearer(e.rootTok)).
				ExpectStatus(http.StatusCreated).JSON(&k)

			for _, tc := range []struct {
				name, client, tenant string
				acmeOff              bool // acme turned off before (and for every case after)
				want                 string
			}{
				{name: "ok/platform client", client: "platform-x"},
				{name: "fail/acme's client", client: "acme-x", want: "invalid_grant"},
				{name: "fail/acme's client naming acme", client: "acme-x", tenant: "acme", want: "invalid_grant"},
				{name: "fail/acme's client, acme off", client: "acme-x", acmeOff: true, want: "unauthorized_client"},
				{name: "ok/platform client, acme off", client: "platform-x", acmeOff: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := e.in.Client(t)
					if tc.acmeOff {
						c.PatchJSON("/admin/tenants/"+a, map[string]any{"active": false}, st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
						c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("acme-x", secrets["acme-x"])).
							ExpectError(http.StatusBadRequest, "unauthorized_client")
					}
					form := exchangeKeyForm(k.Key, "")
					if tc.tenant != "" {
						form.Set("tenant", tc.tenant)
					}
					resp := c.PostForm("/oauth2/token", form, st.Basic(tc.client, secrets[tc.client]))
					if tc.want != "" {
						resp.ExpectError(http.StatusBadRequest, tc.want)
						return
					}
					wantTenantToken(t, "a key exchanged through "+tc.client, resp.Token().AccessToken, "")
				})
			}
		})
	}
}
