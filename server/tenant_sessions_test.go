package server_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// TestPasswordChangeKeepsTheOrganisation: the session a password change
// starts obeys the organisation rule of every login. Through acme's own
// client (the account a member of acme and the platform's super_admin) it
// continues in acme with acme's roles, never as a platform session of the
// super_admin; through a platform client a session in acme continues in
// acme. Once acme is turned off the change is refused before anything
// changes (the password stays), acme's client logs in and refreshes
// nothing, and a session of no organisation on acme's client (one issued
// before the rule) refreshes nothing either. Before the fix the change
// through acme's client answered a platform super_admin token with a
// refresh token that kept working after acme was turned off.
func TestPasswordChangeKeepsTheOrganisation(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			acme := e.createTenant(t, "acme")
			const plat = "plat@example.com"
			u := e.fx.User(t, plat, tenantPass, "super_admin")
			e.member(t, acme, plat, "user")
			e.fx.Client(t, clients.Spec{ID: "acmeapp", Name: "Acme app", TenantID: acme, Public: true,
				Grants: []string{token.GrantPassword, token.GrantRefreshToken}, Audiences: []string{e.fx.Issuer()}})
			viaApp := func(email, pw string) *st.Response {
				form := st.PasswordForm(email, pw, "")
				form.Set("client_id", "acmeapp")
				return e.c.PostForm("/oauth2/token", form)
			}
			refreshApp := func(rt string) *st.Response {
				form := st.RefreshForm(rt)
				form.Set("client_id", "acmeapp")
				return e.c.PostForm("/oauth2/token", form)
			}
			change := func(bearer, from, to string) *st.Response {
				return e.c.PostJSON("/auth/password/change", map[string]string{"current_password": from, "new_password": to},
					st.Bearer(bearer))
			}

			pw := tenantPass
			next := func() string { pw += "!"; return pw }

			// acme's client: the login and the change's session are acme's.
			login := viaApp(plat, pw).Token()
			wantTenantToken(t, "login through acmeapp", login.AccessToken, "acme", "user")
			old := pw
			changed := change(login.AccessToken, old, next()).Token()
			c := wantTenantToken(t, "password change through acmeapp", changed.AccessToken, "acme", "user")
			if c["client_id"] != "acmeapp" || changed.RefreshToken == "" {
				t.Fatalf("the change's session: client %v, refresh token %t", c["client_id"], changed.RefreshToken != "")
			}
			refreshed := refreshApp(changed.RefreshToken).Token()
			wantTenantToken(t, "its refresh", refreshed.AccessToken, "acme", "user")

			// A platform client's session in acme continues in acme.
			form := st.PasswordForm(plat, pw, "")
			form.Set("tenant", "acme")
			inAcme := e.c.PostForm("/oauth2/token", form, st.Basic("web", e.webSecret)).Token()
			old = pw
			wantTenantToken(t, "password change of web's acme session",
				change(inAcme.AccessToken, old, next()).Token().AccessToken, "acme", "user")
			stillValid := viaApp(plat, pw).Token()

			// A session of no organisation on acme's client, as the change
			// issued before the rule.
			legacy := legacyFamily(t, e.acctEnv, u.ID, "acmeapp")

			// acme turned off.
			raw, _ := json.Marshal(map[string]any{"active": false})
			e.c.Do(http.MethodPatch, "/admin/tenants/"+acme, raw, "application/json", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			viaApp(plat, pw).ExpectError(http.StatusBadRequest, "unauthorized_client")
			refreshApp(refreshed.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
			refreshApp(legacy).ExpectError(http.StatusBadRequest, "invalid_grant")
			change(stillValid.AccessToken, pw, pw+"?").ExpectError(http.StatusBadRequest, "unauthorized_client")
			// The refused change changed nothing: the password still signs in.
			wantTenantToken(t, "platform login with the unchanged password",
				e.c.PostForm("/oauth2/token", st.PasswordForm(plat, pw, ""), st.Basic("web", e.webSecret)).Token().AccessToken,
				"", "super_admin")
		})
	}
}

// TestOrganisationClientFamilyOfNoOrganisation: a session of no
// organisation on an organisation's client (issued before the rule, by a
// password change through it) refreshes nothing, its organisation active
// or not: the client's sessions are its organisation's only. Before the
// fix it refreshed into platform tokens even with the organisation off.
func TestOrganisationClientFamilyOfNoOrganisation(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			acme := e.createTenant(t, "acme")
			u := e.fx.User(t, "plat@example.com", tenantPass, "super_admin")
			e.member(t, acme, "plat@example.com", "user")
			e.fx.Client(t, clients.Spec{ID: "acmeapp", Name: "Acme app", TenantID: acme, Public: true,
				Grants: []string{token.GrantPassword, token.GrantRefreshToken}})
			refresh := func(rt string) *st.Response {
				form := st.RefreshForm(rt)
				form.Set("client_id", "acmeapp")
				return e.c.PostForm("/oauth2/token", form)
			}
			refresh(legacyFamily(t, e.acctEnv, u.ID, "acmeapp")).ExpectError(http.StatusBadRequest, "invalid_grant")
			afterOff := legacyFamily(t, e.acctEnv, u.ID, "acmeapp")
			raw, _ := json.Marshal(map[string]any{"active": false})
			e.c.Do(http.MethodPatch, "/admin/tenants/"+acme, raw, "application/json", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			refresh(afterOff).ExpectError(http.StatusBadRequest, "invalid_grant")
		})
	}
}

// legacyFamily writes a refresh family of no organisation for userID at
// clientID straight into the token state, as the password change issued
// one through an organisation's client before the rule, and returns its
// refresh token.
func legacyFamily(t *testing.T, a *acctEnv, userID, clientID string) string {
	t.Helper()
	sid, secret := make([]byte, 16), make([]byte, 32)
	rand.Read(sid)
	rand.Read(secret)
	id := base64.RawURLEncoding.EncodeToString(sid)
	rt := token.RefreshTokenPrefix + id + "." + base64.RawURLEncoding.EncodeToString(secret)
	now := time.Now()
	fam := store.RefreshFamily{ID: id, UserID: userID, ClientID: clientID, CreatedAt: now, AuthTime: now,
		AMR: []string{"pwd"}, AbsoluteExpiry: now.Add(time.Hour), IdleTTL: time.Hour}
	if err := a.in.App.State.CreateFamily(t.Context(), fam, token.HashSecret(rt)); err != nil {
		t.Fatal(err)
	}
	return rt
}

// TestInviteThroughOrganisationClientWithOrganisationsOff: with
// organisations off a client of an organisation gets nothing, at the
// invite's acceptance as at its logins: 400 unauthorized_client, no
// account made and the invite still usable (accepted through the
// built-in client afterwards). Before the fix the acceptance issued a
// session through it.
func TestInviteThroughOrganisationClientWithOrganisationsOff(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, backend) // organisations off
			tn := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
			if err := a.in.App.Core.Store.CreateTenant(t.Context(), &tn); err != nil {
				t.Fatal(err)
			}
			a.fx.Client(t, clients.Spec{ID: "acmeapp", Name: "Acme app", TenantID: tn.ID, Public: true,
				Grants: []string{token.GrantPassword, token.GrantRefreshToken}})
			root := a.login(t, rootEmail, rootPass).AccessToken
			const email = "new@example.com"
			inv := a.invite(t, root, email, "user")
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": inv, "password": tenantPass, "client_id": "acmeapp"}).
				ExpectError(http.StatusBadRequest, "unauthorized_client")
			if _, err := a.in.App.Core.Store.GetUserByEmail(t.Context(), email); err == nil {
				t.Fatal("the refused acceptance made the account")
			}
			tr := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": inv, "password": tenantPass}).Token()
			if c := decodeClaims(t, tr.AccessToken); c["client_id"] == "acmeapp" {
				t.Fatalf("accepted through the built-in client: %v", c)
			}
		})
	}
}
