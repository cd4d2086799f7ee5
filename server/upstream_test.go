package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/console"
	"github.com/portcullis-auth/portcullis/server/pages"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// idpEnv is a deployment with upstream identity providers: "corp" (the
// test provider op: verified_email_auto, just-in-time creation with the
// role user, allowed_domains example.com, trust_mfa) and "plain" (op2:
// link by confirmation, no JIT, no domain restriction).
type idpEnv struct {
	*acctEnv
	op, op2 *upstreamtest.Provider
	root    string // a super_admin's token (issuer audience)
}

func newIDPEnv(t *testing.T, backend st.Backend) *idpEnv {
	t.Helper()
	op, op2 := upstreamtest.New(t), upstreamtest.New(t)
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n" +
		op.ProviderYAML("corp", "    link: verified_email_auto", "    allowed_domains: [example.com]",
			"    jit: {enabled: true, default_role: user}", "    trust_mfa: true") +
		op2.ProviderYAML("plain")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAcctEnvOn(t, backend, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file})
	return &idpEnv{acctEnv: a, op: op, op2: op2, root: a.login(t, rootEmail, rootPass).AccessToken}
}

func exchangeForm(idToken string) url.Values {
	return url.Values{"grant_type": {token.GrantTokenExchange}, "client_id": {"portcullis"},
		"subject_token": {idToken}, "subject_token_type": {token.TokenTypeIDToken}, "scope": {"openid"}}
}

// exchange runs the token exchange through the built-in client.
func (e *idpEnv) exchange(t *testing.T, idToken string) *st.Response {
	t.Helper()
	return e.c.PostForm("/oauth2/token", exchangeForm(idToken))
}

// lastAudit returns the newest audit event with the action.
func (e *idpEnv) lastAudit(t *testing.T, action string) store.AuditEvent {
	t.Helper()
	page, err := e.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: action, Limit: 1})
	if err != nil || len(page.Items) == 0 {
		t.Fatalf("no %s event: %v", action, err)
	}
	return page.Items[0]
}

func (e *idpEnv) identities(t *testing.T, userID string) []map[string]any {
	t.Helper()
	var list struct {
		Items []map[string]any `json:"items"`
	}
	e.c.Get("/admin/users/"+userID+"/identities", st.Bearer(e.root)).ExpectStatus(200).JSON(&list)
	return list.Items
}

// refused checks a 400 invalid_request and the login.failed event with
// details.method upstream and the reason.
func (e *idpEnv) refused(t *testing.T, r *st.Response, reason string) {
	t.Helper()
	r.ExpectError(http.StatusBadRequest, "invalid_request")
	ev := e.lastAudit(t, "login.failed")
	if ev.Details["method"] != "upstream" || ev.Details["reason"] != reason || time.Since(ev.Time) > time.Minute {
		t.Fatalf("login.failed = %+v, want method upstream, reason %s", ev, reason)
	}
}

// TestUpstreamTokenExchange runs the token-exchange path of upstream id
// tokens end to end, on PostgreSQL+Redis and on SQLite: just-in-time
// creation, returning by sub after the upstream email changes,
// verified_email_auto linking, and every hostile case refused with
// invalid_request and an audit event.
func TestUpstreamTokenExchange(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			op := e.op
			verified := upstreamtest.Bool(true)

			// Discovery lists the grant.
			var meta map[string]any
			e.c.Get("/.well-known/openid-configuration").ExpectStatus(200).JSON(&meta)
			if !slices.Contains(claimStrings(t, meta, "grant_types_supported"), token.GrantTokenExchange) {
				t.Fatalf("discovery does not list token exchange: %v", meta["grant_types_supported"])
			}

			// Just-in-time creation: a new verified address of an allowed domain.
			jitRaw := op.IDToken(t, upstreamtest.Token{Subject: "sub-new", Email: "new@example.com",
				EmailVerified: verified, AMR: []string{"pwd", "mfa"}})
			resp := e.exchange(t, jitRaw)
			tr := resp.Token()
			var raw map[string]any
			resp.JSON(&raw)
			if raw["issued_token_type"] != token.TokenTypeAccessToken || tr.RefreshToken == "" || tr.IDToken == "" {
				t.Fatalf("exchange answer = %s", resp.Body)
			}
			at := decodeClaims(t, tr.AccessToken)
			newID, _ := at["sub"].(string)
			if !slices.Equal(claimStrings(t, decodeClaims(t, tr.IDToken), "amr"), []string{"fed", "mfa"}) {
				t.Fatalf("amr = %v, want fed and the trusted upstream mfa", decodeClaims(t, tr.IDToken)["amr"])
			}
			// A refresh keeps the federated login's amr.
			rf := st.RefreshForm(tr.RefreshToken)
			rf.Set("client_id", "portcullis")
			refreshed := e.c.PostForm("/oauth2/token", rf).Token()
			if amr := claimStrings(t, decodeClaims(t, refreshed.IDToken), "amr"); !slices.Equal(amr, []string{"fed", "mfa"}) {
				t.Fatalf("amr after refresh = %v", amr)
			}
			if acr := decodeClaims(t, refreshed.AccessToken)["acr"]; acr != "mfa" {
				t.Fatalf("acr after refresh = %v", acr)
			}
			u, err := e.in.App.Core.Store.GetUser(context.Background(), newID)
			if err != nil || u.Email != "new@example.com" || !u.EmailVerified || u.PasswordHash != "" || !slices.Equal(u.Roles, []string{"user"}) {
				t.Fatalf("created user = %+v, %v", u, err)
			}
			if ev := e.lastAudit(t, "user.jit_created"); ev.TargetID != newID || ev.Details["provider"] != "corp" {
				t.Fatalf("user.jit_created = %+v", ev)
			}
			ids := e.identities(t, newID)
			if len(ids) != 1 || ids[0]["provider"] != "corp" || ids[0]["subject"] != "sub-new" || ids[0]["email"] != "new@example.com" {
				t.Fatalf("identities = %v", ids)
			}
			// The JIT user has no password: the password grant refuses any.
			e.c.PostForm("/oauth2/token", st.PasswordForm("new@example.com", "anything at all", ""), st.Basic("web", e.webSecret)).
				ExpectError(http.StatusBadRequest, "invalid_grant")

			// Returning by sub after the upstream email changed: the same user.
			tr = e.exchange(t, op.IDToken(t, upstreamtest.Token{Subject: "sub-new", Email: "renamed@example.com", EmailVerified: verified})).Token()
			if decodeClaims(t, tr.AccessToken)["sub"] != newID {
				t.Fatal("a returning user was not found by sub")
			}

			// verified_email_auto: a local verified account of an allowed domain.
			eve := e.fx.User(t, "eve@example.com", "eve's long passphrase", "user")
			tr = e.exchange(t, op.IDToken(t, upstreamtest.Token{Subject: "sub-eve", Email: "Eve@Example.com", EmailVerified: verified})).Token()
			if decodeClaims(t, tr.AccessToken)["sub"] != eve.ID {
				t.Fatal("verified_email_auto did not sign in the local account")
			}
			if ev := e.lastAudit(t, "identity.linked"); ev.TargetID != eve.ID || ev.Details["via"] != "auto" {
				t.Fatalf("identity.linked = %+v", ev)
			}

			// Hostile cases, each refused and audited.
			victim := e.fx.User(t, "victim@example.com", "victim's long passphrase", "admin")
			unverifiedLocal := e.fx.User(t, "unverified@example.com", "unverified passphrase", "user")
			if _, err := e.in.App.Core.Store.UpdateUser(context.Background(), unverifiedLocal.ID, func(u *store.User) error {
				u.EmailVerified = false
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			gone := e.fx.User(t, "gone@example.com", "deactivated passphrase", "user")
			if _, err := e.in.App.Core.Store.UpdateUser(context.Background(), gone.ID, func(u *store.User) error {
				u.Active = false
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			good := upstreamtest.Token{Subject: "sub-x", Email: "x@example.com", EmailVerified: verified}
			with := func(f func(*upstreamtest.Token)) upstreamtest.Token { tok := good; f(&tok); return tok }
			for _, tc := range []struct {
				name   string
				raw    string
				reason string
			}{
				{"wrong_iss", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Issuer = "https://evil.example" })), "unknown_provider"},
				{"wrong_aud", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Audience = []string{"another-app"} })), "unknown_provider"},
				{"another_providers_client", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Audience = []string{e.op2.ClientID} })), "unknown_provider"},
				{"expired", op.IDToken(t, with(func(tk *upstreamtest.Token) {
					tk.IssuedAt, tk.Expiry = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
				})), "invalid_token"},
				{"alg_none", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Alg = "none" })), "invalid_token"},
				{"key_not_in_jwks", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.UnknownKey = true })), "invalid_token"},
				{"email_verified_false", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.EmailVerified = upstreamtest.Bool(false) })), "email_unverified"},
				{"email_verified_missing", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.EmailVerified = nil })), "email_unverified"},
				{"nOAuth_email_changed_to_a_local_users", op.IDToken(t, upstreamtest.Token{Subject: "sub-attacker", Email: "victim@example.com"}), "email_unverified"},
				{"local_email_unverified_never_linked", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Email = "unverified@example.com" })), "local_email_unverified"},
				{"deactivated_local_user", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Email = "gone@example.com" })), "deactivated"},
				{"domain_outside_allowed_domains", op.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Email = "x@elsewhere.example" })), "domain_not_allowed"},
				{"not_a_jwt", "garbage", "invalid_token"},
				// plain: confirmation needed (no page to confirm on), JIT off.
				{"confirmation_needed", e.op2.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Email = "victim@example.com" })), "confirmation_required"},
				{"jit_off", e.op2.IDToken(t, with(func(tk *upstreamtest.Token) { tk.Email = "nobody@example.org" })), "jit_disabled"},
			} {
				t.Log(tc.name)
				e.refused(t, e.exchange(t, tc.raw), tc.reason)
			}
			if ids := e.identities(t, victim.ID); len(ids) != 0 {
				t.Fatalf("the victim's account was linked: %v", ids)
			}
			if ids := e.identities(t, unverifiedLocal.ID); len(ids) != 0 {
				t.Fatalf("an unverified local account was linked: %v", ids)
			}

			// A deactivated user found by sub is refused too.
			if _, err := e.in.App.Core.Store.UpdateUser(context.Background(), newID, func(u *store.User) error {
				u.Active = false
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			e.refused(t, e.exchange(t, op.IDToken(t, upstreamtest.Token{Subject: "sub-new", Email: "new@example.com", EmailVerified: verified})), "deactivated")

			// A client whose grants do not list token exchange may not use it.
			form := exchangeForm(op.IDToken(t, good))
			form.Del("client_id")
			e.c.PostForm("/oauth2/token", form, st.Basic("web", e.webSecret)).ExpectError(http.StatusBadRequest, "unauthorized_client")
			// Shapes: unknown subject_token_type, delegation, audience.
			form = exchangeForm(op.IDToken(t, good))
			form.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")
			e.c.PostForm("/oauth2/token", form).ExpectError(http.StatusBadRequest, "invalid_request")
			form = exchangeForm(op.IDToken(t, good))
			form.Set("actor_token", "x")
			e.c.PostForm("/oauth2/token", form).ExpectError(http.StatusBadRequest, "invalid_request")
			form = exchangeForm(op.IDToken(t, good))
			form.Set("audience", "api")
			e.c.PostForm("/oauth2/token", form).ExpectError(http.StatusBadRequest, "invalid_target")
			form = exchangeForm(op.IDToken(t, good))
			form.Del("subject_token")
			e.c.PostForm("/oauth2/token", form).ExpectError(http.StatusBadRequest, "invalid_request")

			// Neither the client secrets nor an exchanged id token reach the
			// log (a refused exchange logs at warn, which the harness keeps).
			logs := e.in.Logs.String()
			for _, secret := range []string{op.ClientSecret, e.op2.ClientSecret, strings.Split(jitRaw, ".")[1], strings.Split(jitRaw, ".")[2]} {
				if strings.Contains(logs, secret) {
					t.Fatalf("the log holds a secret or token: %q", secret)
				}
			}
		})
	}
}

// TestUpstreamTokenExchangeConfidentialClient: a confidential client whose
// grants list token exchange may exchange; without trust_mfa the upstream
// mfa does not count.
func TestUpstreamTokenExchangeConfidentialClient(t *testing.T) {
	e := newIDPEnv(t, st.SQLite)
	secret := e.fx.Client(t, clients.Spec{ID: "front", Name: "Front", Grants: []string{token.GrantTokenExchange}})
	ann := e.fx.User(t, "ann@example.org", "ann's long passphrase", "user")
	if err := e.in.App.Core.Store.LinkFederatedIdentity(context.Background(), &store.FederatedIdentity{Provider: "plain", Issuer: e.op2.Issuer, Subject: "sub-ann",
		UserID: ann.ID}); err != nil {
		t.Fatal(err)
	}
	form := exchangeForm(e.op2.IDToken(t, upstreamtest.Token{Subject: "sub-ann", AMR: []string{"mfa"}}))
	form.Del("client_id")
	tr := e.c.PostForm("/oauth2/token", form, st.Basic("front", secret)).Token()
	at := decodeClaims(t, tr.AccessToken)
	if at["sub"] != ann.ID || tr.RefreshToken != "" {
		t.Fatalf("access token %v, refresh %q", at, tr.RefreshToken)
	}
	if amr := claimStrings(t, decodeClaims(t, tr.IDToken), "amr"); !slices.Equal(amr, []string{"fed"}) {
		t.Fatalf("amr = %v: the upstream mfa counted without trust_mfa", amr)
	}
	ev := e.lastAudit(t, "login.succeeded")
	if ev.Details["method"] != "upstream" || ev.Details["provider"] != "plain" || ev.ClientID != "front" {
		t.Fatalf("login.succeeded = %+v", ev)
	}
}

// TestUpstreamExchangeRefreshKeepsToTheGrant: a third-party client
// exchanging an upstream id token that names no permission gets none, and
// its refresh token never widens that (RFC 6749 §6), whether the refresh
// names nothing or a permission the user holds (invalid_scope). The client has no
// authorization_code grant, which was what used to decide the cap.
func TestUpstreamExchangeRefreshKeepsToTheGrant(t *testing.T) {
	e := newIDPEnv(t, st.PostgresRedis)
	secret := e.fx.Client(t, clients.Spec{ID: "partner", Name: "Partner",
		Grants: []string{token.GrantTokenExchange, token.GrantRefreshToken}})
	eve := e.fx.User(t, "eve@example.com", "eve's long passphrase", "admin")
	form := exchangeForm(e.op.IDToken(t, upstreamtest.Token{Subject: "sub-eve", Email: "eve@example.com",
		EmailVerified: upstreamtest.Bool(true)}))
	form.Del("client_id")
	tr := e.c.PostForm("/oauth2/token", form, st.Basic("partner", secret)).ExpectStatus(http.StatusOK).Token()
	if at := decodeClaims(t, tr.AccessToken); at["sub"] != eve.ID || tr.Scope != "openid" || tr.RefreshToken == "" {
		t.Fatalf("exchange: sub %v, scope %q, refresh token %t", at["sub"], tr.Scope, tr.RefreshToken != "")
	}
	refreshed := e.c.PostForm("/oauth2/token", st.RefreshForm(tr.RefreshToken), st.Basic("partner", secret)).
		ExpectStatus(http.StatusOK).Token()
	if refreshed.Scope != "openid" {
		t.Fatalf("the refresh widened the grant from %q to %q", tr.Scope, refreshed.Scope)
	}
	if roles := claimStrings(t, decodeClaims(t, refreshed.AccessToken), "roles"); len(roles) != 0 {
		t.Fatalf("the refreshed token carries roles %v", roles)
	}
	asking := st.RefreshForm(refreshed.RefreshToken)
	asking.Set("scope", "users:write")
	e.c.PostForm("/oauth2/token", asking, st.Basic("partner", secret)).ExpectError(http.StatusBadRequest, "invalid_scope")
}

// TestUpstreamExchangeTokenIsNotSelfService: a third-party client that
// signs people in by token exchange is a third-party application like one
// of the code flow: its token cannot see or change the person's sessions,
// consents, second factors, API keys or password (403, nothing made). The
// built-in client's exchanged token, first-party, can.
func TestUpstreamExchangeTokenIsNotSelfService(t *testing.T) {
	e := newIDPEnv(t, st.SQLite)
	secret := e.fx.Client(t, clients.Spec{ID: "partner", Name: "Partner", Grants: []string{token.GrantTokenExchange}})
	e.fx.User(t, "eve@example.com", "eve's long passphrase", "admin")
	idToken := func() string {
		return e.op.IDToken(t, upstreamtest.Token{Subject: "sub-eve", Email: "eve@example.com", EmailVerified: upstreamtest.Bool(true)})
	}
	form := exchangeForm(idToken())
	form.Del("client_id")
	partner := st.Bearer(e.c.PostForm("/oauth2/token", form, st.Basic("partner", secret)).ExpectStatus(http.StatusOK).Token().AccessToken)
	for _, r := range []struct {
		method, path string
		body         any
	}{ // every other self-service route shares the check (accounts.loadSelf)
		{http.MethodGet, "/auth/sessions", nil},
		{http.MethodGet, "/auth/consents", nil},
		{http.MethodGet, "/auth/mfa", nil},
		{http.MethodPost, "/auth/mfa/recovery-codes", nil},
		{http.MethodGet, "/auth/api-keys", nil},
		{http.MethodPost, "/auth/api-keys", map[string]any{"name": "k", "scopes": []string{"users:read"}}},
		{http.MethodPost, "/auth/password/change", map[string]string{"current_password": "eve's long passphrase", "new_password": "eve's second passphrase"}},
	} {
		var resp *st.Response
		switch r.method {
		case http.MethodGet:
			resp = e.c.Get(r.path, partner)
		default:
			resp = e.c.PostJSON(r.path, r.body, partner)
		}
		resp.ExpectError(http.StatusForbidden, "forbidden")
	}
	own := st.Bearer(e.exchange(t, idToken()).ExpectStatus(http.StatusOK).Token().AccessToken)
	e.c.Get("/auth/api-keys", own).ExpectStatus(http.StatusOK)
	e.c.Get("/auth/mfa", own).ExpectStatus(http.StatusOK)
	e.login(t, "eve@example.com", "eve's long passphrase") // the password did not change
}

// TestPasswordFrontEndWithTokenExchange: a client with the password grant
// that also lists token exchange (to exchange API keys, say) is a front-end
// the person types their password into, not a third-party application: a
// session that named no permission follows the user on refresh (a new role
// shows up), its tokens act on the account, and the restricted token of a
// temporary password changes the password (../shared/CONTRACT.md).
func TestPasswordFrontEndWithTokenExchange(t *testing.T) {
	a := newAcctEnvOn(t, st.SQLite)
	secret := a.fx.Client(t, clients.Spec{ID: "svc", Name: "Svc",
		Grants: []string{token.GrantPassword, token.GrantRefreshToken, token.GrantTokenExchange}})
	login := func(email, pw string) st.TokenResponse {
		return a.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("svc", secret)).Token()
	}
	root := a.login(t, rootEmail, rootPass).AccessToken
	t.Run("temporary_password_change", func(t *testing.T) {
		ann := a.fx.User(t, "ann@example.com", "ann's first passphrase", "user")
		a.c.PostJSON("/admin/users/"+ann.ID+"/temp-password", map[string]string{"password": "temporary passphrase 7"}, st.Bearer(root)).
			ExpectStatus(http.StatusOK)
		restricted := login("ann@example.com", "temporary passphrase 7")
		if !restricted.MustChangePassword {
			t.Fatalf("not restricted: %+v", restricted)
		}
		a.c.PostJSON("/auth/password/change", map[string]string{"current_password": "temporary passphrase 7", "new_password": "ann's second passphrase"},
			st.Bearer(restricted.AccessToken)).ExpectStatus(http.StatusOK)
	})
	t.Run("refresh_follows_a_new_role", func(t *testing.T) {
		bob := a.fx.User(t, "bob@example.com", "bob's first passphrase", "user")
		full := login("bob@example.com", "bob's first passphrase")
		a.c.PostJSON("/admin/users/"+bob.ID+"/roles", map[string]string{"role": "admin"}, st.Bearer(root)).ExpectStatus(http.StatusOK)
		if r := a.c.PostForm("/oauth2/token", st.RefreshForm(full.RefreshToken), st.Basic("svc", secret)).Token(); !strings.Contains(r.Scope, "users:read") {
			t.Fatalf("refreshed scope %q after a new role: the session does not follow the user", r.Scope)
		}
	})
	t.Run("self_service", func(t *testing.T) {
		a.fx.User(t, "cy@example.com", "cy's first passphrase", "user")
		a.c.Get("/auth/sessions", st.Bearer(login("cy@example.com", "cy's first passphrase").AccessToken)).ExpectStatus(http.StatusOK)
	})
}

// TestAdminUserIdentities: listing needs users:read; unlinking needs
// users:write and the privilege ceiling (an admin cannot unlink a
// super_admin's identity), is audited, and the upstream account no longer
// signs in as that user.
func TestAdminUserIdentities(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			ctx := context.Background()
			boss := e.fx.User(t, "boss@example.org", "boss's long passphrase", "super_admin")
			ann := e.fx.User(t, "ann@example.org", "ann's long passphrase", "user")
			e.fx.User(t, "adm@example.org", "admin's long passphrase", "admin")
			for _, l := range []store.FederatedIdentity{{Provider: "plain", Issuer: e.op2.Issuer, Subject: "sub-boss", UserID: boss.ID,
				Email: "boss@upstream.example"}, {Provider: "plain", Issuer: e.op2.Issuer, Subject: "sub-ann", UserID: ann.ID}} {
				if err := e.in.App.Core.Store.LinkFederatedIdentity(ctx, &l); err != nil {
					t.Fatal(err)
				}
			}
			adm := e.login(t, "adm@example.org", "admin's long passphrase").AccessToken
			user := e.login(t, "ann@example.org", "ann's long passphrase").AccessToken

			ids := e.identities(t, boss.ID)
			if len(ids) != 1 || ids[0]["subject"] != "sub-boss" || ids[0]["issuer"] != e.op2.Issuer || ids[0]["email"] != "boss@upstream.example" ||
				ids[0]["linked_at"] == "" {
				t.Fatalf("identities = %v", ids)
			}
			e.c.Get("/admin/users/"+boss.ID+"/identities", st.Bearer(user)).ExpectError(http.StatusForbidden, "insufficient_scope")
			e.c.Get("/admin/users/usr_nobody/identities", st.Bearer(e.root)).ExpectError(http.StatusNotFound, "not_found")

			// The ceiling: an admin may not unlink a super_admin's identity.
			e.c.Delete("/admin/users/"+boss.ID+"/identities/plain", st.Bearer(adm)).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Delete("/admin/users/"+boss.ID+"/identities/plain", st.Bearer(user)).ExpectError(http.StatusForbidden, "insufficient_scope")
			if len(e.identities(t, boss.ID)) != 1 {
				t.Fatal("a refused unlink removed the identity")
			}
			e.c.Delete("/admin/users/"+ann.ID+"/identities/corp", st.Bearer(adm)).ExpectError(http.StatusNotFound, "not_found")

			// Signing in through the link works, then not after unlinking.
			e.exchange(t, e.op2.IDToken(t, upstreamtest.Token{Subject: "sub-ann"})).Token()
			e.c.Delete("/admin/users/"+ann.ID+"/identities/plain", st.Bearer(adm)).ExpectStatus(http.StatusNoContent)
			ev := e.lastAudit(t, "identity.unlinked")
			if ev.TargetID != ann.ID || ev.Details["provider"] != "plain" || ev.Details["subject"] != "sub-ann" || ev.ActorID == "" {
				t.Fatalf("identity.unlinked = %+v", ev)
			}
			if len(e.identities(t, ann.ID)) != 0 {
				t.Fatal("the identity is still listed")
			}
			e.refused(t, e.exchange(t, e.op2.IDToken(t, upstreamtest.Token{Subject: "sub-ann"})), "email_unverified")
			// Deleting the user removes their identities.
			if err := e.in.App.Core.Store.LinkFederatedIdentity(ctx, &store.FederatedIdentity{Provider: "corp", Issuer: e.op.Issuer, Subject: "sub-ann2",
				UserID: ann.ID}); err != nil {
				t.Fatal(err)
			}
			e.c.Delete("/admin/users/"+ann.ID, st.Bearer(adm)).ExpectStatus(http.StatusNoContent)
			if _, err := e.in.App.Core.Store.GetFederatedIdentity(ctx, "corp", e.op.Issuer, "sub-ann2"); err == nil {
				t.Fatal("the deleted user's identity remains")
			}
		})
	}
}

// TestUpstreamProvidersFileRefusedAtStart: a bad providers file stops the
// server with located errors and never shows the secret.
func TestUpstreamProvidersFileRefusedAtStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "providers.yaml")
	body := "providers:\n  - id: Bad Id\n    name: X\n    issuer: http://idp.example.com\n    client_id: c\n    client_secret: hunter2-upstream-secret\n    color: blue\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = file
	_, stderr, code := st.RunCLI(t, env, "", "serve")
	if code == 0 {
		t.Fatal("serve started with a bad providers file")
	}
	for _, want := range []string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE", "providers.yaml:2:9", "providers.yaml:4:13", "providers.yaml:7:5"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr does not name %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "hunter2-upstream-secret") {
		t.Fatalf("stderr shows the client secret:\n%s", stderr)
	}
}

// TestUpstreamTokenExchangeConcurrentFirstSignIn: the same new upstream
// account exchanged by many requests at once (each with its own id token,
// as separate sign-ins at the provider) creates one account; every request
// signs in to it (the losers of the creation race find the link).
func TestUpstreamTokenExchangeConcurrentFirstSignIn(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			const n = 8
			raws := make([]string, n)
			for i := range raws {
				raws[i] = e.op.IDToken(t, upstreamtest.Token{Subject: "sub-race", Email: "race@example.com", EmailVerified: upstreamtest.Bool(true)})
			}
			subs := make([]string, n)
			codes := make([]int, n)
			st.AtOnce(n, func(i int) {
				resp, err := http.PostForm(e.in.URL+"/oauth2/token", exchangeForm(raws[i]))
				if err != nil {
					return
				}
				defer resp.Body.Close()
				codes[i] = resp.StatusCode
				var tr st.TokenResponse
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					t.Logf("racer %d: %s", i, body)
				}
				if json.Unmarshal(body, &tr) == nil && tr.AccessToken != "" {
					subs[i], _ = decodeClaims(t, tr.AccessToken)["sub"].(string)
				}
			})
			for i := range n {
				if codes[i] != http.StatusOK || subs[i] == "" || subs[i] != subs[0] {
					t.Fatalf("racer %d: status %d sub %q (racer 0: %q)", i, codes[i], subs[i], subs[0])
				}
			}
			page, err := e.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "user.jit_created", Limit: 50})
			if err != nil || len(page.Items) != 1 {
				t.Fatalf("user.jit_created events = %d, %v; want exactly one", len(page.Items), err)
			}
		})
	}
}

// TestUpstreamIDTokenSignsInOnce: an upstream id token signs in once. The
// same token sent by 8 requests at once, on PostgreSQL+Redis and on SQLite,
// opens exactly one session; the others, and a later replay, are refused
// with invalid_request and a login.failed event of reason replayed_token,
// while a new token of the same account still signs in.
func TestUpstreamIDTokenSignsInOnce(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			mint := func() string {
				return e.op.IDToken(t, upstreamtest.Token{Subject: "sub-once", Email: "once@example.com", EmailVerified: upstreamtest.Bool(true)})
			}
			e.exchange(t, mint()).ExpectStatus(http.StatusOK) // the account exists before the race
			raw := mint()
			const n = 8
			codes := make([]int, n)
			st.AtOnce(n, func(i int) {
				resp, err := http.PostForm(e.in.URL+"/oauth2/token", exchangeForm(raw))
				if err != nil {
					return
				}
				resp.Body.Close()
				codes[i] = resp.StatusCode
			})
			ok, refused := 0, 0
			for _, c := range codes {
				switch c {
				case http.StatusOK:
					ok++
				case http.StatusBadRequest:
					refused++
				}
			}
			if ok != 1 || refused != n-1 {
				t.Fatalf("statuses %v: want exactly one 200 and %d × 400", codes, n-1)
			}
			e.refused(t, e.exchange(t, raw), upstream.ReasonReplayedToken)
			e.exchange(t, mint()).ExpectStatus(http.StatusOK)
		})
	}
}

// TestReviewIDTokenReplayViaBase64Malleability: a spent id token does not
// sign in again through another spelling of its signature (the last
// character of an RS256 signature has 4 unused bits that go-jose's
// decoder ignores).
func TestReviewIDTokenReplayViaBase64Malleability(t *testing.T) {
	e := newIDPEnv(t, st.SQLite)
	raw := e.op.IDToken(t, upstreamtest.Token{Subject: "sub-mall", Email: "mall@example.com", EmailVerified: upstreamtest.Bool(true)})
	e.exchange(t, raw).ExpectStatus(http.StatusOK)
	e.refused(t, e.exchange(t, raw), upstream.ReasonReplayedToken)
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alpha, raw[len(raw)-1])
	replays := 0
	for i := 1; i < 64; i++ {
		v := raw[:len(raw)-1] + string(alpha[last^i])
		if e.exchange(t, v).StatusCode == http.StatusOK {
			replays++
		}
	}
	if replays > 0 {
		t.Fatalf("a spent id token signed in %d more times through re-encodings of its signature", replays)
	}
}

// failedLogins counts the login.failed audit events.
func (e *idpEnv) failedLogins(t *testing.T) int {
	t.Helper()
	page, err := e.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "login.failed", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Items)
}

// respellLast returns part with its last character changed in an unused
// trailing bit, a spelling base64.RawURLEncoding decodes to the same
// bytes, or false when the last character has no unused bit.
func respellLast(t *testing.T, part string) (string, bool) {
	t.Helper()
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	want, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.IndexByte(alpha, part[len(part)-1])
	for bit := 1; bit < 64; bit <<= 1 {
		v := part[:len(part)-1] + string(alpha[i^bit])
		if got, err := base64.RawURLEncoding.DecodeString(v); err == nil && bytes.Equal(got, want) {
			return v, true
		}
	}
	return "", false
}

// TestUpstreamExchangeRefusesNonCanonicalIDToken: an id token is exchanged
// only in the canonical base64url spelling of its three parts; another
// spelling that go-jose would verify as the same token (an unused bit of
// the last character of the header, payload or signature changed, a line
// break) and one it would not (padding) are refused as invalid_token and
// audited, before and after the canonical token is spent, and the
// canonical token still signs in once.
func TestUpstreamExchangeRefusesNonCanonicalIDToken(t *testing.T) {
	e := newIDPEnv(t, st.SQLite)
	type spelling struct {
		name string
		raw  string
	}
	// The subject's length moves the payload's; a few tries find a token
	// whose header, payload and signature all have unused bits.
	var raw string
	var parts []string
	var spellings []spelling
	for n := 0; n < 3 && len(spellings) < 3; n++ {
		raw = e.op.IDToken(t, upstreamtest.Token{Subject: "sub-canon" + strings.Repeat("x", n), Email: "canon@example.com", EmailVerified: upstreamtest.Bool(true)})
		parts = strings.Split(raw, ".")
		spellings = nil
		for i, name := range []string{"header", "payload", "signature"} {
			if v, ok := respellLast(t, parts[i]); ok {
				p := slices.Clone(parts)
				p[i] = v
				spellings = append(spellings, spelling{name: name + " last character respelled", raw: strings.Join(p, ".")})
			}
		}
	}
	if len(spellings) < 2 {
		t.Fatalf("only %d parts of the token can be respelled", len(spellings))
	}
	sig := parts[2]
	spellings = append(spellings,
		spelling{name: "line break in the signature", raw: parts[0] + "." + parts[1] + "." + sig[:8] + "\n" + sig[8:]},
		spelling{name: "padded signature", raw: raw + "=="},
	)
	check := func(t *testing.T) {
		for _, sp := range spellings {
			t.Run(sp.name, func(t *testing.T) {
				before := e.failedLogins(t)
				e.refused(t, e.exchange(t, sp.raw), upstream.ReasonInvalidToken)
				if after := e.failedLogins(t); after != before+1 {
					t.Fatalf("login.failed events %d → %d, want one more", before, after)
				}
			})
		}
	}
	t.Run("unspent", check)
	e.exchange(t, raw).ExpectStatus(http.StatusOK)
	t.Run("spent", check)
	e.refused(t, e.exchange(t, raw), upstream.ReasonReplayedToken)
}

// browseTestProvider follows a Begin URL at the test provider and returns
// its redirect's query (the provider signs in whoever NextLogin names).
func browseTestProvider(t *testing.T, authURL string) url.Values {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("test provider answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestUpstreamInviteAcceptance: an invite is accepted by signing in at a
// provider whose verified email is the invite's (through the browser core,
// on both backends): the invited account is created with the invite's role,
// no password, linked; another address, an unverified one and a used invite
// are refused, and nothing is created for them.
func TestUpstreamInviteAcceptance(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			svc := e.in.App.Upstream
			ctx := context.Background()
			m := upstream.Meta{IP: "192.0.2.20", ClientID: "portcullis"}
			signIn := func(tok upstreamtest.Token) upstream.Verified {
				t.Helper()
				e.op2.NextLogin(tok)
				u, err := svc.Begin(ctx, "plain", siCallback, upstream.Freshness{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				v, err := svc.Callback(ctx, "plain", browseTestProvider(t, u), m)
				if err != nil {
					t.Fatalf("Callback: %v", err)
				}
				return v
			}
			inviteTok := accounts.InviteRefOf(e.invite(t, e.root, "invited@example.org", "admin"))

			// Another address, and the invited address unverified: refused.
			_, _, err := svc.AcceptInvite(ctx, signIn(upstreamtest.Token{Subject: "sub-other", Email: "other@example.org", EmailVerified: upstreamtest.Bool(true)}), inviteTok, m)
			if r := (*upstream.Refusal)(nil); !errors.As(err, &r) || r.Reason != upstream.ReasonInviteMismatch {
				t.Fatalf("another address: %v", err)
			}
			if ev := e.lastAudit(t, "login.failed"); ev.Details["method"] != "upstream" || ev.Details["reason"] != upstream.ReasonInviteMismatch {
				t.Fatalf("login.failed = %+v", ev)
			}
			_, _, err = svc.AcceptInvite(ctx, signIn(upstreamtest.Token{Subject: "sub-inv", Email: "invited@example.org"}), inviteTok, m)
			if r := (*upstream.Refusal)(nil); !errors.As(err, &r) || r.Reason != upstream.ReasonEmailUnverified {
				t.Fatalf("unverified address: %v", err)
			}
			if _, err := e.in.App.Core.Store.GetUserByEmail(ctx, "invited@example.org"); err == nil {
				t.Fatal("a refused acceptance created the account")
			}

			u, d, err := svc.AcceptInvite(ctx, signIn(upstreamtest.Token{Subject: "sub-inv", Email: "Invited@Example.org", EmailVerified: upstreamtest.Bool(true)}), inviteTok, m)
			if err != nil || d.Outcome != upstream.OutcomeAcceptInvite {
				t.Fatalf("AcceptInvite = %+v, %v", d, err)
			}
			got, err := e.in.App.Core.Store.GetUser(ctx, u.ID)
			if err != nil || got.Email != "invited@example.org" || !got.EmailVerified || got.PasswordHash != "" || len(got.Roles) != 1 || got.Roles[0] != "admin" {
				t.Fatalf("invited user = %+v, %v", got, err)
			}
			if ids := e.identities(t, u.ID); len(ids) != 1 || ids[0]["subject"] != "sub-inv" {
				t.Fatalf("identities = %v", ids)
			}
			if ev := e.lastAudit(t, "invite.accepted"); ev.TargetID != u.ID || ev.Details["provider"] != "plain" {
				t.Fatalf("invite.accepted = %+v", ev)
			}
			// The invite is used: a second acceptance (another upstream account) is refused.
			_, _, err = svc.AcceptInvite(ctx, signIn(upstreamtest.Token{Subject: "sub-inv2", Email: "invited@example.org", EmailVerified: upstreamtest.Bool(true)}), inviteTok, m)
			if err == nil || !strings.Contains(err.Error(), "invalid_token") {
				t.Fatalf("used invite: %v", err)
			}
			// The invited person now signs in by sub (token exchange too).
			tr := e.exchange(t, e.op2.IDToken(t, upstreamtest.Token{Subject: "sub-inv"})).Token()
			if decodeClaims(t, tr.AccessToken)["sub"] != u.ID {
				t.Fatal("the invited account does not sign in by sub")
			}
		})
	}
}

// TestBuiltInClientGainsTokenExchange: the built-in client is created with
// the token-exchange grant, and one created before it existed gains it at
// start-up (and still never the password grant), with the authorization
// code grant and the console's callback as its redirect URI.
func TestBuiltInClientGainsTokenExchange(t *testing.T) {
	env := st.NewEnv(t, st.SQLite)
	in := st.Start(t, env)
	ctx := context.Background()
	c, err := in.App.Core.Store.GetClient(ctx, "portcullis")
	if err != nil || !slices.Contains(c.Grants, token.GrantTokenExchange) || slices.Contains(c.Grants, token.GrantPassword) {
		t.Fatalf("built-in client grants %v, %v", c.Grants, err)
	}
	if err := in.App.Core.Store.SetClientGrants(ctx, "portcullis", []string{token.GrantRefreshToken}); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	in2 := st.Start(t, env)
	c, err = in2.App.Core.Store.GetClient(ctx, "portcullis")
	// The console's sign-in adds the code flow, to the server's own redirect
	// URIs only (the console's callback, /account/security's sign-in again).
	if err != nil || !slices.Equal(c.Grants, []string{token.GrantRefreshToken, token.GrantTokenExchange, token.GrantAuthorizationCode}) ||
		!slices.Equal(c.RedirectURIs, []string{console.CallbackURL(in2.Config.Issuer), pages.SecuritySignInURL(in2.Config.Issuer)}) {
		t.Fatalf("reconciled grants %v, redirect URIs %v, %v", c.Grants, c.RedirectURIs, err)
	}
}

// TestCreateFederatedUserUnderTheCeiling: just-in-time creation re-checks
// the role against the policy in force: a role the top role may not grant,
// or one the policy lacks, creates nothing.
func TestCreateFederatedUserUnderTheCeiling(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("version: 1\nroles:\n  owner: {level: 100, permissions: [\"*\"]}\n  member: {level: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_POLICY_FILE"] = pol
	in := st.Start(t, env)
	ctx := context.Background()
	for _, role := range []string{"owner", "wizard"} {
		_, err := in.App.Accounts.CreateFederatedUser(ctx, accounts.Meta{}, accounts.FederatedUser{Email: role + "@example.com",
			EmailVerified: true, Role: role, Provider: "p", Issuer: "https://p.example", Subject: role})
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("role %s: %v, want forbidden", role, err)
		}
		if _, err := in.App.Core.Store.GetUserByEmail(ctx, role+"@example.com"); err == nil {
			t.Fatalf("role %s: a user was created", role)
		}
	}
	u, err := in.App.Accounts.CreateFederatedUser(ctx, accounts.Meta{}, accounts.FederatedUser{Email: "m@example.com",
		EmailVerified: true, Role: "member", Provider: "p", Issuer: "https://p.example", Subject: "m"})
	if err != nil || len(u.Roles) != 1 || u.Roles[0] != "member" || u.PasswordHash != "" {
		t.Fatalf("member: %+v, %v", u, err)
	}
}

// TestUpstreamTokenExchangeOwesSecondFactor: a user whose role requires a
// second factor is refused by token exchange (no page to give it on)
// unless the provider is trusted for MFA and its token says mfa.
func TestUpstreamTokenExchangeOwesSecondFactor(t *testing.T) {
	def, err := os.ReadFile("../policy/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, append(def, []byte("mfa:\n  required_for_level: 50\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	op, op2 := upstreamtest.New(t), upstreamtest.New(t)
	file := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(file, []byte("providers:\n"+op.ProviderYAML("trusted", "    trust_mfa: true")+op2.ProviderYAML("plain")), 0o600); err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_POLICY_FILE"] = pol
	env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = file
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	ctx := context.Background()
	adm := fx.User(t, "adm@example.org", "admin's long passphrase", "admin")
	for _, l := range []store.FederatedIdentity{{Provider: "trusted", Issuer: op.Issuer, Subject: "s-adm", UserID: adm.ID},
		{Provider: "plain", Issuer: op2.Issuer, Subject: "s-adm", UserID: adm.ID}} {
		if err := in.App.Core.Store.LinkFederatedIdentity(ctx, &l); err != nil {
			t.Fatal(err)
		}
	}
	c := in.Client(t)
	c.PostForm("/oauth2/token", exchangeForm(op2.IDToken(t, upstreamtest.Token{Subject: "s-adm", AMR: []string{"mfa"}}))).
		ExpectError(http.StatusBadRequest, "invalid_request")
	page, err := in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "login.failed", Limit: 1})
	if err != nil || len(page.Items) != 1 || page.Items[0].Details["reason"] != "mfa_required" || page.Items[0].TargetID != adm.ID {
		t.Fatalf("login.failed = %+v, %v", page.Items, err)
	}
	c.PostForm("/oauth2/token", exchangeForm(op.IDToken(t, upstreamtest.Token{Subject: "s-adm"}))).
		ExpectError(http.StatusBadRequest, "invalid_request")
	tr := c.PostForm("/oauth2/token", exchangeForm(op.IDToken(t, upstreamtest.Token{Subject: "s-adm", AMR: []string{"pwd", "mfa"}}))).Token()
	if acr := decodeClaims(t, tr.AccessToken)["acr"]; acr != "mfa" {
		t.Fatalf("acr = %v", acr)
	}
}

// TestUpstreamExchangeAfterSessionsEnded: an exchanged upstream id token
// signs in at its auth_time (else its iat), not at the exchange: the
// tokens say so, and "end every session" (admin sessions/revoke) covers
// that sign-in, so an id token from before it opens no session afterwards
// (400 invalid_request, RFC 8693 §2.2.2, audited login.failed
// sessions_ended), while one from after it, or with a future auth_time
// (capped at now), does. No sleep: the tokens are minted 50 minutes in the
// past.
func TestUpstreamExchangeAfterSessionsEnded(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			eve := e.fx.User(t, "eve@example.com", "eve's long passphrase", "user")
			old := time.Now().Add(-50 * time.Minute)
			mint := func(iat time.Time, authTime *time.Time) string {
				tok := upstreamtest.Token{Subject: "sub-eve", Email: "eve@example.com", EmailVerified: upstreamtest.Bool(true),
					AMR: []string{"pwd", "mfa"}, IssuedAt: iat, Expiry: time.Now().Add(10 * time.Minute)}
				if authTime != nil {
					tok.Extra = map[string]any{"auth_time": authTime.Unix()}
				}
				return e.op.IDToken(t, tok)
			}
			authTimeOf := func(tr st.TokenResponse) int64 {
				t.Helper()
				at, _ := decodeClaims(t, tr.IDToken)["auth_time"].(float64)
				return int64(at)
			}
			before := e.exchange(t, mint(time.Now(), &old)).ExpectStatus(http.StatusOK).Token()
			if got := authTimeOf(before); got != old.Unix() {
				t.Fatalf("auth_time %d, want the upstream auth_time %d", got, old.Unix())
			}
			byIAT := e.exchange(t, mint(old, nil)).ExpectStatus(http.StatusOK).Token()
			if got := authTimeOf(byIAT); got != old.Unix() {
				t.Fatalf("auth_time %d of a token without one, want its iat %d", got, old.Unix())
			}

			e.c.PostJSON("/admin/users/"+eve.ID+"/sessions/revoke", nil, st.Bearer(e.root)).ExpectStatus(http.StatusNoContent)
			revoked := time.Now()
			// Signed in before the revoke, by auth_time and by iat.
			e.exchange(t, mint(old, &old)).ExpectError(http.StatusBadRequest, "invalid_request")
			e.exchange(t, mint(old, nil)).ExpectError(http.StatusBadRequest, "invalid_request")
			page, err := e.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "login.failed", Limit: 3})
			if err != nil || len(page.Items) != 2 {
				t.Fatalf("login.failed events %+v, %v; want the two refusals", page.Items, err)
			}
			for _, ev := range page.Items {
				if ev.Details["reason"] != "sessions_ended" || ev.TargetID != eve.ID || ev.Details["provider"] != "corp" {
					t.Fatalf("login.failed %+v, want reason sessions_ended for eve by corp", ev)
				}
			}
			e.c.PostForm("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {before.RefreshToken},
				"client_id": {"portcullis"}}).ExpectError(http.StatusBadRequest, "invalid_grant")

			// A sign-in after the revoke: an auth_time ahead of this clock
			// is taken as the exchange's time.
			future := time.Now().Add(time.Hour)
			after := e.exchange(t, mint(time.Now(), &future)).ExpectStatus(http.StatusOK).Token()
			if got := authTimeOf(after); got < revoked.Unix() || got > time.Now().Unix() {
				t.Fatalf("auth_time %d of a future auth_time, want the exchange's time", got)
			}
		})
	}
}

// TestUpstreamExchangeRefusesLoginOlderThanMaxLoginAge: an exchanged id
// token whose sign-in at the provider (auth_time, else iat) is older than
// store.MaxLoginAge is refused (400 invalid_request, audited login.failed
// login_not_fresh), whatever the user's cut-offs: a cut-off is kept for
// store.UserCutoffLifetime, so a login older than any cut-off still kept
// never signs in. One a little younger than the bound signs in. Found by a
// review: the exchange path had no bound on the login's age.
func TestUpstreamExchangeRefusesLoginOlderThanMaxLoginAge(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			mint := func(iat time.Time, authTime *time.Time) string {
				tok := upstreamtest.Token{Subject: "sub-old", Email: "old@example.com", EmailVerified: upstreamtest.Bool(true),
					IssuedAt: iat, Expiry: time.Now().Add(10 * time.Minute)}
				if authTime != nil {
					tok.Extra = map[string]any{"auth_time": authTime.Unix()}
				}
				return e.op.IDToken(t, tok)
			}
			tooOld := time.Now().Add(-store.MaxLoginAge - time.Hour)
			young := time.Now().Add(-store.MaxLoginAge + time.Hour)
			e.refused(t, e.exchange(t, mint(time.Now(), &tooOld)), upstream.ReasonStaleLogin)
			e.refused(t, e.exchange(t, mint(tooOld, nil)), upstream.ReasonStaleLogin)
			e.exchange(t, mint(time.Now(), &young)).ExpectStatus(http.StatusOK)
		})
	}
}

// TestUpstreamJITEmailVerifiedOnlyByTheDomainsProvider: a just-in-time
// account's email is verified only on the word of a provider whose
// allowed_domains hold its domain. "social" (JIT, no allowed_domains) may
// create boss@example.com for whoever it says owns it, but that account is
// unverified, so "corp" (verified_email_auto, allowed_domains example.com)
// refuses the real boss (local_email_unverified) instead of linking them
// to it; the social account still signs in, and once its holder proves the
// mailbox (the verification link) the address is verified, yet corp asks
// for the account's proof while social's identity is attached. An account
// that corp itself created is verified, and "mail", which owns example.com
// too, links to it automatically. On PostgreSQL+Redis and on SQLite.
func TestUpstreamJITEmailVerifiedOnlyByTheDomainsProvider(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			social, corp, mail := upstreamtest.New(t), upstreamtest.New(t), upstreamtest.New(t)
			file := filepath.Join(t.TempDir(), "providers.yaml")
			yaml := "providers:\n" +
				social.ProviderYAML("social", "    jit: {enabled: true, default_role: user}") +
				corp.ProviderYAML("corp", "    link: verified_email_auto", "    allowed_domains: [example.com]",
					"    jit: {enabled: true, default_role: user}") +
				mail.ProviderYAML("mail", "    link: verified_email_auto", "    allowed_domains: [example.com]")
			if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file})
			e := &idpEnv{acctEnv: a, root: a.login(t, rootEmail, rootPass).AccessToken}
			ctx := context.Background()
			yes := upstreamtest.Bool(true)
			signIn := func(op *upstreamtest.Provider, sub, email string) *st.Response {
				return e.exchange(t, op.IDToken(t, upstreamtest.Token{Subject: sub, Email: email, EmailVerified: yes}))
			}
			emailVerified := func(t *testing.T, userID string) bool {
				t.Helper()
				u, err := e.in.App.Core.Store.GetUser(ctx, userID)
				if err != nil {
					t.Fatal(err)
				}
				return u.EmailVerified
			}

			// social creates boss@example.com for the attacker: unverified.
			tr := signIn(social, "attacker", "boss@example.com").Token()
			attacker, _ := decodeClaims(t, tr.AccessToken)["sub"].(string)
			if emailVerified(t, attacker) {
				t.Fatal("a provider without allowed_domains verified the email of the account it created")
			}
			if info := e.c.Get("/userinfo", st.Bearer(tr.AccessToken)).ExpectStatus(200).Map(); info["email_verified"] != false {
				t.Fatalf("userinfo = %v", info)
			}

			// The real boss at corp is not linked to it.
			e.refused(t, signIn(corp, "real-boss", "boss@example.com"), upstream.ReasonLocalEmailUnverified)
			if ev := e.lastAudit(t, "login.failed"); ev.TargetID != attacker || ev.Details["provider"] != "corp" {
				t.Fatalf("login.failed = %+v", ev)
			}
			if ids := e.identities(t, attacker); len(ids) != 1 || ids[0]["provider"] != "social" {
				t.Fatalf("identities = %v, want social's only", ids)
			}

			// A JIT user of social still signs in; proving the mailbox
			// verifies the address, yet corp links only after the account
			// is proved, while social's identity is attached (it may be a
			// squatter's: TestUpstreamJITSquatterLosesTheOwnersAccount).
			tr = signIn(social, "sub-ann", "ann@example.com").Token()
			ann, _ := decodeClaims(t, tr.AccessToken)["sub"].(string)
			if again := signIn(social, "sub-ann", "ann@example.com").Token(); decodeClaims(t, again.AccessToken)["sub"] != ann {
				t.Fatal("a returning social user was not signed in")
			}
			e.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(tr.AccessToken)).ExpectStatus(http.StatusAccepted)
			link := e.smtp.WaitFor(t, "ann@example.com", mailWithin).Token(t)
			e.c.PostJSON("/auth/email/verify", map[string]string{"token": link}).ExpectStatus(200)
			if !emailVerified(t, ann) {
				t.Fatal("the verification link did not verify the address")
			}
			e.refused(t, signIn(corp, "corp-ann", "ann@example.com"), upstream.ReasonNeedsConfirmation)

			// corp owns example.com: the account it creates is verified,
			// and mail, which owns it too, links to it automatically.
			tr = signIn(corp, "corp-chief", "chief@example.com").Token()
			chief, _ := decodeClaims(t, tr.AccessToken)["sub"].(string)
			if !emailVerified(t, chief) {
				t.Fatal("the domain's provider did not verify the email of the account it created")
			}
			if got := signIn(mail, "mail-chief", "chief@example.com").Token(); decodeClaims(t, got.AccessToken)["sub"] != chief {
				t.Fatal("verified_email_auto did not link to the account the domain's provider created")
			}
			if ev := e.lastAudit(t, "identity.linked"); ev.TargetID != chief || ev.Details["via"] != "auto" || ev.Details["provider"] != "mail" {
				t.Fatalf("identity.linked = %+v", ev)
			}
		})
	}
}

// TestUpstreamJITSquatterLosesTheOwnersAccount: "social" (JIT, no
// allowed_domains) creates boss@example.com for an attacker; "corp" and
// "mail" (verified_email_auto, allowed_domains example.com) own the domain.
// The real boss, refused at corp (local_email_unverified), recovers the
// account, either straight with a reset link or after redeeming the
// verification link the attacker had resent: while social's identity is
// attached, corp does not link automatically (confirmation_required), and
// the reset unlinks it (identity.unlinked, via password_reset), so corp then
// links and the attacker's social sign-in no longer reaches the account
// (it is an unknown upstream account whose email is the boss's: refused
// without confirmation). A vouching provider's identity survives a later
// reset, and an account holding only such identities still links
// automatically. On PostgreSQL+Redis and on SQLite.
func TestUpstreamJITSquatterLosesTheOwnersAccount(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		for _, path := range []struct {
			name string
			// verifyFirst: the owner redeems the verification link the
			// attacker asked for before resetting.
			verifyFirst bool
		}{
			{"reset", false},
			{"verify_link_then_reset", true},
		} {
			t.Run(b.String()+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				social, corp, mail := upstreamtest.New(t), upstreamtest.New(t), upstreamtest.New(t)
				file := filepath.Join(t.TempDir(), "providers.yaml")
				yaml := "providers:\n" +
					social.ProviderYAML("social", "    jit: {enabled: true, default_role: user}") +
					corp.ProviderYAML("corp", "    link: verified_email_auto", "    allowed_domains: [example.com]") +
					mail.ProviderYAML("mail", "    link: verified_email_auto", "    allowed_domains: [example.com]")
				if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file})
				e := &idpEnv{acctEnv: a, root: a.login(t, rootEmail, rootPass).AccessToken}
				yes := upstreamtest.Bool(true)
				const boss = "boss@example.com"
				signIn := func(op *upstreamtest.Provider, sub string) *st.Response {
					return e.exchange(t, op.IDToken(t, upstreamtest.Token{Subject: sub, Email: boss, EmailVerified: yes}))
				}
				providers := func(t *testing.T, userID string) []string {
					t.Helper()
					var out []string
					for _, id := range e.identities(t, userID) {
						out = append(out, id["provider"].(string))
					}
					return out
				}
				reset := func(t *testing.T, pw string) {
					t.Helper()
					e.c.PostJSON("/auth/password/forgot", map[string]string{"email": boss}).ExpectStatus(http.StatusAccepted)
					tok := e.smtp.WaitFor(t, boss, mailWithin).Token(t)
					e.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": pw}).ExpectStatus(http.StatusNoContent)
				}

				tr := signIn(social, "attacker").Token()
				squatted, _ := decodeClaims(t, tr.AccessToken)["sub"].(string)
				e.refused(t, signIn(corp, "real-boss"), upstream.ReasonLocalEmailUnverified)

				if path.verifyFirst {
					// The attacker has the link mailed; the owner redeems it.
					e.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(tr.AccessToken)).ExpectStatus(http.StatusAccepted)
					link := e.smtp.WaitFor(t, boss, mailWithin).Token(t)
					e.c.PostJSON("/auth/email/verify", map[string]string{"token": link}).ExpectStatus(200)
					// social's identity is attached: corp asks for the
					// account's proof instead of linking to it.
					e.refused(t, signIn(corp, "real-boss"), upstream.ReasonNeedsConfirmation)
					if got := providers(t, squatted); !slices.Equal(got, []string{"social"}) {
						t.Fatalf("identities = %v, want social's only", got)
					}
				}

				reset(t, "the boss's own passphrase")
				ev := e.lastAudit(t, "identity.unlinked")
				if ev.TargetID != squatted || ev.ActorID != squatted || ev.Details["provider"] != "social" ||
					ev.Details["subject"] != "attacker" || ev.Details["via"] != "password_reset" {
					t.Fatalf("identity.unlinked = %+v", ev)
				}
				if got := providers(t, squatted); len(got) != 0 {
					t.Fatalf("identities after the reset = %v, want none", got)
				}
				if got := signIn(corp, "real-boss").Token(); decodeClaims(t, got.AccessToken)["sub"] != squatted {
					t.Fatal("corp did not link the owner to the recovered account")
				}
				if ev := e.lastAudit(t, "identity.linked"); ev.TargetID != squatted || ev.Details["provider"] != "corp" || ev.Details["via"] != "auto" {
					t.Fatalf("identity.linked = %+v", ev)
				}
				// The attacker's upstream account is unknown now, and its
				// email is the boss's: it is not signed in as the boss.
				e.refused(t, signIn(social, "attacker"), upstream.ReasonNeedsConfirmation)
				if ev := e.lastAudit(t, "login.failed"); ev.TargetID != squatted || ev.Details["provider"] != "social" {
					t.Fatalf("login.failed = %+v", ev)
				}

				// corp vouches for example.com: its identity survives a
				// reset, and mail links beside it automatically.
				reset(t, "the boss's second passphrase")
				if got := providers(t, squatted); !slices.Equal(got, []string{"corp"}) {
					t.Fatalf("identities after a second reset = %v, want corp's", got)
				}
				if got := signIn(corp, "real-boss").Token(); decodeClaims(t, got.AccessToken)["sub"] != squatted {
					t.Fatal("corp's identity no longer signs in after the owner's reset")
				}
				if got := signIn(mail, "mail-boss").Token(); decodeClaims(t, got.AccessToken)["sub"] != squatted {
					t.Fatal("mail did not link automatically to an account holding only a vouching identity")
				}
				if ev := e.lastAudit(t, "identity.linked"); ev.TargetID != squatted || ev.Details["provider"] != "mail" || ev.Details["via"] != "auto" {
					t.Fatalf("identity.linked = %+v", ev)
				}
			})
		}
	}
}

// TestUpstreamExchangeRefusesUntrustedExtraAudience: on PostgreSQL+Redis
// and SQLite, an id token issued to the provider's client and to another
// application of the provider's, without an azp naming the provider's
// client, is refused at the token exchange (OIDC Core §3.1.3.7 (3)); one
// whose azp is the provider's client is exchanged. Before (found by a
// review), the azp check ran only when azp was present, and the token
// signed its person in.
func TestUpstreamExchangeRefusesUntrustedExtraAudience(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newIDPEnv(t, b)
			who := upstreamtest.Token{Audience: []string{"another-app-at-the-provider", e.op.ClientID},
				Subject: "sub-aud", Email: "aud@example.com", EmailVerified: upstreamtest.Bool(true)}
			e.refused(t, e.exchange(t, e.op.IDToken(t, who)), upstream.ReasonInvalidToken)
			who.AZP = e.op.ClientID
			e.exchange(t, e.op.IDToken(t, who)).ExpectStatus(http.StatusOK)
		})
	}
}
