package server_test

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// acctEnv is a deployment on PostgreSQL + Redis whose emails go to a real
// SMTP server on loopback, with a super_admin and a confidential client.
type acctEnv struct {
	in        *st.Instance
	c         *st.Client
	fx        *st.Fixtures
	smtp      *mailtest.Server
	webSecret string
	root      store.User // super_admin
}

const (
	rootEmail  = "root@example.com"
	rootPass   = "root password for tests 1"
	publicURL  = "https://id.example.test"
	mailWithin = 10 * time.Second
)

func newAcctEnv(t *testing.T, env ...map[string]string) *acctEnv {
	t.Helper()
	return newAcctEnvOn(t, st.PostgresRedis, env...)
}

// newAcctEnvOn is newAcctEnv on the given backend.
func newAcctEnvOn(t *testing.T, backend st.Backend, env ...map[string]string) *acctEnv {
	t.Helper()
	smtp := mailtest.NewServer(t)
	e := st.NewEnv(t, backend)
	e["PORTCULLIS_SMTP_URL"] = smtp.URL()
	e["PORTCULLIS_PUBLIC_URL"] = publicURL
	for _, m := range env {
		for k, v := range m {
			e[k] = v
		}
	}
	in := st.Start(t, e)
	a := &acctEnv{in: in, c: in.Client(t), fx: st.NewFixtures(t, in.App.Core), smtp: smtp}
	a.root = a.fx.User(t, rootEmail, rootPass, "super_admin")
	// Its tokens carry the issuer audience, so they work at /admin as well as /auth.
	a.webSecret = a.fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{a.fx.Issuer()}})
	return a
}

// with is a for a subtest: its client fails t, not the test that made a.
func (a *acctEnv) with(t *testing.T) *acctEnv {
	c := *a
	c.c = a.in.Client(t)
	return &c
}

// login runs the password grant through the confidential client "web"
// (issuer audience: the token works at /admin).
func (a *acctEnv) login(t *testing.T, email, pw string) st.TokenResponse {
	t.Helper()
	return a.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", a.webSecret)).Token()
}

// loginFails checks that the password grant is refused.
func (a *acctEnv) loginFails(t *testing.T, email, pw string) {
	t.Helper()
	a.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", a.webSecret)).
		ExpectError(http.StatusBadRequest, "invalid_grant")
}

// refresh runs the refresh grant through "web".
func (a *acctEnv) refresh(t *testing.T, rt string) *st.Response {
	t.Helper()
	return a.c.PostForm("/oauth2/token", st.RefreshForm(rt), st.Basic("web", a.webSecret))
}

// invite creates an invite as the holder of bearer and returns the token of
// the emailed link, checking the link's shape.
func (a *acctEnv) invite(t *testing.T, bearer, email, role string) string {
	t.Helper()
	r := a.c.PostJSON("/admin/invites", map[string]string{"email": email, "role": role}, st.Bearer(bearer)).ExpectStatus(http.StatusCreated)
	inv := r.Map()
	if inv["email"] != email || inv["role"] != role || inv["status"] != "pending" || inv["id"] == "" {
		t.Fatalf("invite %s", r.Body)
	}
	if strings.Contains(string(r.Body), "token") {
		t.Fatalf("the invite answer must never carry the token: %s", r.Body)
	}
	msg := a.smtp.WaitFor(t, email, mailWithin)
	link := msg.Link(t)
	if !strings.HasPrefix(link, publicURL+"/invite?token=") {
		t.Fatalf("invite link %q", link)
	}
	if !strings.Contains(msg.Text, role) {
		t.Fatalf("the invite email does not name the role %q:\n%s", role, msg.Text)
	}
	return msg.Token(t)
}

// accept accepts an invite through the first-party client.
func (a *acctEnv) accept(t *testing.T, tok, pw string) st.TokenResponse {
	t.Helper()
	return a.c.PostJSON("/auth/invites/accept", map[string]string{"token": tok, "password": pw, "name": "Someone"}).Token()
}

func claimStrings(t *testing.T, claims map[string]any, name string) []string {
	t.Helper()
	switch v := claims[name].(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			out = append(out, x.(string))
		}
		sort.Strings(out)
		return out
	case nil:
		return nil
	}
	t.Fatalf("claim %s has type %T", name, claims[name])
	return nil
}

// TestInviteChain: super_admin invites an admin, the admin invites a user;
// each link arrives over SMTP and works once; the ceiling refuses what it must.
func TestInviteChain(t *testing.T) {
	a := newAcctEnv(t)
	root := a.login(t, rootEmail, rootPass)

	// super_admin → admin.
	adminTok := a.invite(t, root.AccessToken, "ada@example.com", "admin")
	admin := a.accept(t, adminTok, "ada's long passphrase")
	c := decodeClaims(t, admin.AccessToken)
	if !slices.Equal(claimStrings(t, c, "roles"), []string{"admin"}) || !strings.Contains(c["scope"].(string), "users:invite") {
		t.Fatalf("admin's token: %v", c)
	}
	if c["client_id"] != "portcullis" || admin.RefreshToken == "" {
		t.Fatalf("accepting without a client should use the first-party client with a refresh token: %v, %+v", c, admin)
	}
	// The first-party client refreshes without a secret, and cannot do the password grant.
	a.c.PostForm("/oauth2/token", formOf(map[string]string{"grant_type": "refresh_token", "refresh_token": admin.RefreshToken, "client_id": "portcullis"})).Token()
	a.c.PostForm("/oauth2/token", formOf(map[string]string{"grant_type": "password", "username": "ada@example.com", "password": "ada's long passphrase", "client_id": "portcullis"})).
		ExpectError(http.StatusBadRequest, "unauthorized_client")
	info := a.c.Get("/userinfo", st.Bearer(admin.AccessToken)).ExpectStatus(200).Map()
	if info["email"] != "ada@example.com" || info["email_verified"] != true {
		t.Fatalf("userinfo after accepting: %v", info)
	}
	// The link works once.
	a.c.PostJSON("/auth/invites/accept", map[string]string{"token": adminTok, "password": "another long passphrase"}).
		ExpectError(http.StatusBadRequest, "invalid_token")

	// admin → user; admin may not invite admin or super_admin, nor grant admin.
	userTok := a.invite(t, admin.AccessToken, "uma@example.com", "user")
	for _, role := range []string{"admin", "super_admin"} {
		a.c.PostJSON("/admin/invites", map[string]string{"email": "x@example.com", "role": role}, st.Bearer(admin.AccessToken)).
			ExpectError(http.StatusForbidden, "forbidden")
	}
	a.c.PostJSON("/admin/invites", map[string]string{"email": "x@example.com", "role": "nope"}, st.Bearer(admin.AccessToken)).
		ExpectError(http.StatusBadRequest, "invalid_request")
	user := a.accept(t, userTok, "uma's long passphrase")
	uc := decodeClaims(t, user.AccessToken)
	if !slices.Equal(claimStrings(t, uc, "roles"), []string{"user"}) || uc["scope"] != "" {
		t.Fatalf("user's token: %v", uc)
	}
	uid := uc["sub"].(string)
	a.c.PostJSON("/admin/users/"+uid+"/roles", map[string]string{"role": "admin"}, st.Bearer(admin.AccessToken)).
		ExpectError(http.StatusForbidden, "forbidden")
	a.c.PostJSON("/admin/invites", map[string]string{"email": "x@example.com", "role": "user"}, st.Bearer(user.AccessToken)).
		ExpectError(http.StatusForbidden, "insufficient_scope")
	// An invite for an address that has an account is a conflict.
	a.c.PostJSON("/admin/invites", map[string]string{"email": "UMA@example.com", "role": "user"}, st.Bearer(admin.AccessToken)).
		ExpectError(http.StatusConflict, "conflict")
	// super_admin may grant admin.
	got := a.c.PostJSON("/admin/users/"+uid+"/roles", map[string]string{"role": "admin"}, st.Bearer(root.AccessToken)).ExpectStatus(200).Map()
	if roles := got["roles"].([]any); len(roles) != 2 {
		t.Fatalf("roles after grant: %v", got)
	}

	// The invites list shows both as accepted, never a token.
	list := a.c.Get("/admin/invites", st.Bearer(root.AccessToken)).ExpectStatus(200)
	var page struct {
		Items []map[string]any `json:"items"`
	}
	list.JSON(&page)
	if len(page.Items) != 2 || page.Items[0]["status"] != "accepted" || page.Items[1]["status"] != "accepted" ||
		strings.Contains(string(list.Body), "token") {
		t.Fatalf("invites: %s", list.Body)
	}
	// Audit: created and accepted, with actor, client, IP and user agent.
	events := auditEvents(t, a, root.AccessToken, "action=invite.accepted")
	if len(events) != 2 || events[0]["client_id"] != "portcullis" || events[0]["ip"] == "" || events[0]["user_agent"] == "" {
		t.Fatalf("invite.accepted events: %v", events)
	}
	created := auditEvents(t, a, root.AccessToken, "action=invite.created&actor_id="+a.root.ID)
	if len(created) != 1 || created[0]["client_id"] != "web" || created[0]["outcome"] != "success" {
		t.Fatalf("invite.created events by root: %v", created)
	}
}

// tamper changes one character of a token.
func tamper(tok string) string {
	b := []byte(tok)
	i := len(b) - 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func formOf(m map[string]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		out[k] = []string{v}
	}
	return out
}

func auditEvents(t *testing.T, a *acctEnv, bearer, query string) []map[string]any {
	t.Helper()
	var page struct {
		Items      []map[string]any `json:"items"`
		NextCursor string           `json:"next_cursor"`
	}
	a.c.Get("/admin/audit?"+query, st.Bearer(bearer)).ExpectStatus(200).JSON(&page)
	return page.Items
}

// TestInviteLinks: the states a link can be in, each with a clear answer, and
// a password the rules refuse leaves the link usable.
func TestInviteLinks(t *testing.T) {
	a := newAcctEnv(t)
	root := a.login(t, rootEmail, rootPass).AccessToken

	first := a.invite(t, root, "bo@example.com", "user")
	second := a.invite(t, root, "bo@example.com", "user") // supersedes the first
	revoked := a.invite(t, root, "cy@example.com", "user")
	var invs struct {
		Items []map[string]any `json:"items"`
	}
	a.c.Get("/admin/invites?limit=1", st.Bearer(root)).ExpectStatus(200).JSON(&invs)
	if len(invs.Items) != 1 || invs.Items[0]["email"] != "cy@example.com" {
		t.Fatalf("newest invite first: %v", invs.Items)
	}
	cyID := invs.Items[0]["id"].(string)
	got := a.c.Delete("/admin/invites/"+cyID, st.Bearer(root)).ExpectStatus(200).Map()
	if got["status"] != "revoked" {
		t.Fatalf("revoked invite: %v", got)
	}
	a.c.Delete("/admin/invites/inv_unknownunknownunknownunkn", st.Bearer(root)).ExpectError(http.StatusNotFound, "not_found")

	for _, tc := range []struct {
		name, token, pw, code, says string
		status                      int
	}{
		{"fail/superseded", first, "a long enough passphrase", "invalid_token", "already been used", 400},
		{"fail/revoked", revoked, "a long enough passphrase", "invalid_token", "revoked", 400},
		{"fail/unknown", "inv_aaaaaaaaaaaaaaaaaaaaaaaaaa." + strings.Repeat("A", 43), "a long enough passphrase", "invalid_token", "not valid", 400},
		{"fail/garbage", "not-a-token", "a long enough passphrase", "invalid_token", "not valid", 400},
		{"fail/tampered", tamper(second), "a long enough passphrase", "invalid_token", "not valid", 400},
		{"fail/weak", second, "password1", "weak_password", "common", 400},
		{"fail/email_as_password", second, "bo@example.com", "weak_password", "email", 400},
		{"fail/short", second, "short", "weak_password", "at least 8", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": tc.token, "password": tc.pw}).ExpectError(tc.status, tc.code)
			if d := r.Map()["error_description"].(string); !strings.Contains(d, tc.says) {
				t.Fatalf("description %q does not say %q", d, tc.says)
			}
		})
	}
	t.Run("fail/bad_client_keeps_the_invite", func(t *testing.T) {
		// Either way the 401 challenges (RFC 9110 §15.5.2), the client
		// named in the body as the one in HTTP Basic.
		for _, r := range []*st.Response{
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": second, "password": "a long enough passphrase", "client_id": "web"},
				st.Basic("web", "wrong secret")).ExpectError(http.StatusUnauthorized, "invalid_client"),
			a.c.PostJSON("/auth/invites/accept", map[string]string{"token": second, "password": "a long enough passphrase", "client_id": "nope"}).
				ExpectError(http.StatusUnauthorized, "invalid_client"),
		} {
			if got := r.Header.Get("WWW-Authenticate"); got != `Basic realm="portcullis"` {
				t.Fatalf("401 invalid_client with WWW-Authenticate %q", got)
			}
		}
	})
	t.Run("ok/named_client", func(t *testing.T) {
		tr := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": second, "password": "a long enough passphrase", "client_id": "web", "scope": "openid"},
			st.Basic("web", a.webSecret)).Token()
		if c := decodeClaims(t, tr.AccessToken); c["client_id"] != "web" || tr.IDToken == "" || tr.RefreshToken == "" {
			t.Fatalf("accepting through web: %v %+v", c, tr)
		}
		a.login(t, "bo@example.com", "a long enough passphrase")
	})
	t.Run("fail/expired", func(t *testing.T) {
		tok := a.invite(t, root, "di@example.com", "user")
		// Expire the invite in the store: the clock is not the point here, the answer is.
		if err := a.in.App.Core.Store.DB().Exec("UPDATE invites SET expires_at = ? WHERE email_lower = ?",
			time.Now().Add(-time.Minute).UTC(), "di@example.com").Error; err != nil {
			t.Fatal(err)
		}
		r := a.c.PostJSON("/auth/invites/accept", map[string]string{"token": tok, "password": "a long enough passphrase"}).
			ExpectError(http.StatusBadRequest, "invalid_token")
		if d := r.Map()["error_description"].(string); !strings.Contains(d, "expired") {
			t.Fatalf("description %q", d)
		}
		var all struct {
			Items []map[string]any `json:"items"`
		}
		a.c.Get("/admin/invites", st.Bearer(root)).ExpectStatus(200).JSON(&all)
		if all.Items[0]["email"] != "di@example.com" || all.Items[0]["status"] != "expired" {
			t.Fatalf("expired invite listed as %v", all.Items[0])
		}
	})
}

// TestTemporaryPassword: a temporary password ends the user's sessions and
// yields a restricted token that only /auth/password/change accepts; the
// change answers with a full token response and ends the restricted session.
func TestTemporaryPassword(t *testing.T) {
	a := newAcctEnv(t)
	root := a.login(t, rootEmail, rootPass).AccessToken
	ann := a.fx.User(t, "ann@example.com", "ann's first passphrase", "admin")
	before := a.login(t, "ann@example.com", "ann's first passphrase")

	r := a.c.PostJSON("/admin/users/"+ann.ID+"/temp-password", map[string]string{"password": "temporary passphrase 7"}, st.Bearer(root)).ExpectStatus(200)
	if u := r.Map(); u["must_change_password"] != true || u["id"] != ann.ID {
		t.Fatalf("user after temp password: %s", r.Body)
	}
	// Earlier sessions are over.
	a.refresh(t, before.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
	a.c.Get("/userinfo", st.Bearer(before.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
	a.loginFails(t, "ann@example.com", "ann's first passphrase")

	restricted := a.login(t, "ann@example.com", "temporary passphrase 7")
	c := decodeClaims(t, restricted.AccessToken)
	if !restricted.MustChangePassword || restricted.RefreshToken != "" || c["scope"] != "" || len(claimStrings(t, c, "roles")) != 0 {
		t.Fatalf("restricted login: %+v claims %v", restricted, c)
	}
	a.c.Get("/admin/users", st.Bearer(restricted.AccessToken)).ExpectError(http.StatusForbidden, "insufficient_scope")

	for _, tc := range []struct {
		name, current, next, code string
		status                    int
	}{
		{"fail/wrong_current", "not the password", "a brand new passphrase", "invalid_grant", 400},
		{"fail/weak", "temporary passphrase 7", "password123", "weak_password", 400},
		{"fail/same", "temporary passphrase 7", "temporary passphrase 7", "weak_password", 400},
		{"fail/missing", "", "a brand new passphrase", "invalid_request", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.c.PostJSON("/auth/password/change", map[string]string{"current_password": tc.current, "new_password": tc.next},
				st.Bearer(restricted.AccessToken)).ExpectError(tc.status, tc.code)
		})
	}
	a.c.PostJSON("/auth/password/change", map[string]string{"current_password": "x", "new_password": "y"}).
		ExpectError(http.StatusUnauthorized, "unauthorized")

	full := a.c.PostJSON("/auth/password/change", map[string]string{"current_password": "temporary passphrase 7", "new_password": "ann's second passphrase"},
		st.Bearer(restricted.AccessToken)).Token()
	fc := decodeClaims(t, full.AccessToken)
	if full.MustChangePassword || full.RefreshToken == "" || fc["client_id"] != "web" ||
		!strings.Contains(fc["scope"].(string), "users:read") || !slices.Equal(claimStrings(t, fc, "roles"), []string{"admin"}) {
		t.Fatalf("token after the change: %+v claims %v", full, fc)
	}
	a.c.Get("/admin/users", st.Bearer(full.AccessToken)).ExpectStatus(200)
	a.c.Get("/userinfo", st.Bearer(restricted.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
	a.refresh(t, full.RefreshToken).Token()
	a.loginFails(t, "ann@example.com", "temporary passphrase 7")
	if got := a.login(t, "ann@example.com", "ann's second passphrase"); got.MustChangePassword {
		t.Fatal("must_change_password still set")
	}
	for _, action := range []string{"password.temp_set", "password.changed"} {
		evs := auditEvents(t, a, root, "target_id="+ann.ID+"&action="+action)
		if len(evs) == 0 {
			t.Fatalf("no %s event", action)
		}
	}
}

// TestResetRevokesAPIKeys: a password reset revokes every live API key of
// the account, as it ends its sessions: a key made before the reset may be
// another's (someone who registered the address, a leaked password). The
// key is refused at introspection and exchange at once; a key made after
// the reset works.
func TestResetRevokesAPIKeys(t *testing.T) {
	a := newAcctEnv(t)
	a.fx.User(t, "kim@example.com", "kim's first passphrase", "admin")
	tok := a.login(t, "kim@example.com", "kim's first passphrase").AccessToken
	var k struct{ Key string }
	a.c.PostJSON("/auth/api-keys", map[string]any{"name": "ci", "scopes": []string{"users:read"}}, st.Bearer(tok)).
		ExpectStatus(http.StatusCreated).JSON(&k)
	svc := st.Basic("web", a.webSecret)
	if got := a.c.PostForm("/oauth2/introspect", url.Values{"token": {k.Key}}, svc).ExpectStatus(http.StatusOK).Map(); got["active"] != true {
		t.Fatalf("the key before the reset: %v", got)
	}
	a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "kim@example.com"}).ExpectStatus(http.StatusAccepted)
	reset := a.smtp.WaitFor(t, "kim@example.com", mailWithin).Token(t)
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": reset, "new_password": "kim's second passphrase"}).ExpectStatus(http.StatusNoContent)
	if got := a.c.PostForm("/oauth2/introspect", url.Values{"token": {k.Key}}, svc).ExpectStatus(http.StatusOK).Map(); got["active"] != false {
		t.Fatalf("the key after the reset: %v, want inactive", got)
	}
	exchange := exchangeKeyForm(k.Key, "")
	exchange.Set("client_id", "portcullis") // the built-in public client exchanges keys
	a.c.PostForm("/oauth2/token", exchange).ExpectError(http.StatusBadRequest, "invalid_request")
	tok = a.login(t, "kim@example.com", "kim's second passphrase").AccessToken
	var k2 struct{ Key string }
	a.c.PostJSON("/auth/api-keys", map[string]any{"name": "ci", "scopes": []string{"users:read"}}, st.Bearer(tok)).
		ExpectStatus(http.StatusCreated).JSON(&k2)
	if got := a.c.PostForm("/oauth2/introspect", url.Values{"token": {k2.Key}}, svc).ExpectStatus(http.StatusOK).Map(); got["active"] != true {
		t.Fatalf("a key made after the reset: %v", got)
	}
}

// TestForgotPassword: the answer for an unknown address is the same as for a
// known one, in status, body and time; the emailed link resets the password
// once and ends every earlier session.
func TestForgotPassword(t *testing.T) {
	a := newAcctEnv(t)
	bea := a.fx.User(t, "bea@example.com", "bea's first passphrase", "user")
	old := a.login(t, "bea@example.com", "bea's first passphrase")

	known := a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "bea@example.com"}).ExpectStatus(http.StatusAccepted)
	unknown := a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "nobody@example.com"}).ExpectStatus(http.StatusAccepted)
	if string(known.Body) != string(unknown.Body) {
		t.Fatalf("bodies differ: %s vs %s", known.Body, unknown.Body)
	}
	msg := a.smtp.WaitFor(t, "bea@example.com", mailWithin)
	if link := msg.Link(t); !strings.HasPrefix(link, publicURL+"/reset-password?token=") {
		t.Fatalf("reset link %q", link)
	}
	tok := msg.Token(t)
	a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "not an address"}).ExpectError(http.StatusBadRequest, "invalid_request")

	// A weak password leaves the link usable; a good one uses it up.
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "12345678"}).ExpectError(http.StatusBadRequest, "weak_password")
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "bea's second passphrase"}).ExpectStatus(http.StatusNoContent)
	r := a.c.PostJSON("/auth/password/reset", map[string]string{"token": tok, "new_password": "bea's third passphrase"}).ExpectError(http.StatusBadRequest, "invalid_token")
	if d := r.Map()["error_description"].(string); !strings.Contains(d, "already been used") {
		t.Fatalf("description %q", d)
	}
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": tamper(tok), "new_password": "bea's third passphrase"}).ExpectError(http.StatusBadRequest, "invalid_token")

	// Earlier sessions ended: the refresh token and the access token.
	a.refresh(t, old.RefreshToken).ExpectError(http.StatusBadRequest, "invalid_grant")
	a.c.Get("/userinfo", st.Bearer(old.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
	a.loginFails(t, "bea@example.com", "bea's first passphrase")
	fresh := a.login(t, "bea@example.com", "bea's second passphrase")
	a.c.Get("/userinfo", st.Bearer(fresh.AccessToken)).ExpectStatus(200)

	// Admin-initiated reset: the ceiling applies, the link arrives, and the
	// older link of the user stops working.
	root := a.login(t, rootEmail, rootPass).AccessToken
	a.c.PostJSON("/admin/users/"+bea.ID+"/password-reset", nil, st.Bearer(root)).ExpectStatus(http.StatusOK)
	adminTok := a.smtp.WaitFor(t, "bea@example.com", mailWithin).Token(t)
	a.c.PostJSON("/auth/password/forgot", map[string]string{"email": "BEA@example.com"}).ExpectStatus(http.StatusAccepted)
	selfTok := a.smtp.WaitFor(t, "bea@example.com", mailWithin).Token(t)
	// The older link stops once the new one's email went out, which the
	// background job records after the send returns: wait for the job, not
	// only for the mail's arrival.
	a.in.App.Accounts.Wait()
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": adminTok, "new_password": "bea's fourth passphrase"}).ExpectError(http.StatusBadRequest, "invalid_token")
	a.c.PostJSON("/auth/password/reset", map[string]string{"token": selfTok, "new_password": "bea's fourth passphrase"}).ExpectStatus(http.StatusNoContent)
	a.c.PostJSON("/admin/users/"+a.root.ID+"/password-reset", nil, st.Bearer(root)).ExpectError(http.StatusForbidden, "forbidden")

	// The unknown address's lookup and audit run in a background job after
	// the answer; wait for every such job instead of racing it.
	a.in.App.Accounts.Wait()
	evs := auditEvents(t, a, root, "action=password.reset_requested")
	var unknownSeen bool
	for _, e := range evs {
		if e["outcome"] == "failure" && e["target_id"] == "" {
			unknownSeen = true
		}
	}
	if !unknownSeen || len(auditEvents(t, a, root, "action=password.reset&target_id="+bea.ID)) != 2 {
		t.Fatalf("audit: %v", evs)
	}
}

// TestResetLinkOutlivesNoPasswordChange: a reset link emailed before the
// password changed (the user's own change, an admin's temporary password)
// or before the account was deactivated answers 400 invalid_token as a used
// link does, and changes nothing: it must not set a password over the one
// chosen since and end the sessions started with it. A link an admin sends
// to a deactivated account is refused too. A link after a change of
// something else (the name) still works.
func TestResetLinkOutlivesNoPasswordChange(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			a := newAcctEnvOn(t, backend, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
			root := a.login(t, rootEmail, rootPass).AccessToken
			const first, second = "the first long passphrase", "the second long passphrase"
			setActive := func(a *acctEnv, id string, active bool) {
				a.c.PatchJSON("/admin/users/"+id, map[string]any{"active": active}, st.Bearer(root)).ExpectStatus(http.StatusOK)
			}
			for _, tc := range []struct {
				name string
				// after runs once the link is emailed and returns the
				// password that signs in afterwards ("": none, the account is off).
				after func(t *testing.T, a *acctEnv, u store.User) string
				says  string // what the refusal says; "": the link works
			}{
				{"fail/password_changed", func(t *testing.T, a *acctEnv, u store.User) string {
					tok := a.login(t, u.Email, first).AccessToken
					fresh := a.c.PostJSON("/auth/password/change", map[string]string{"current_password": first, "new_password": second},
						st.Bearer(tok)).Token()
					t.Cleanup(func() { a.c.Get("/userinfo", st.Bearer(fresh.AccessToken)).ExpectStatus(http.StatusOK) })
					return second
				}, "already been used"},
				{"fail/temporary_password", func(t *testing.T, a *acctEnv, u store.User) string {
					a.c.PostJSON("/admin/users/"+u.ID+"/temp-password", map[string]string{"password": second}, st.Bearer(root)).
						ExpectStatus(http.StatusOK)
					return second
				}, "already been used"},
				{"fail/deactivated", func(t *testing.T, a *acctEnv, u store.User) string {
					setActive(a, u.ID, false)
					return ""
				}, "already been used"},
				{"fail/deactivated_then_reactivated", func(t *testing.T, a *acctEnv, u store.User) string {
					setActive(a, u.ID, false)
					setActive(a, u.ID, true)
					return first
				}, "already been used"},
				{"ok/renamed", func(t *testing.T, a *acctEnv, u store.User) string {
					a.c.PatchJSON("/admin/users/"+u.ID, map[string]any{"name": "Renamed"}, st.Bearer(root)).ExpectStatus(http.StatusOK)
					return "the reset's long passphrase"
				}, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					a := a.with(t)
					email := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(tc.name, "fail/"), "ok/"), "_", "-") + "@example.com"
					u := a.fx.User(t, email, first, "user")
					a.c.PostJSON("/auth/password/forgot", map[string]string{"email": email}).ExpectStatus(http.StatusAccepted)
					link := a.smtp.WaitFor(t, email, mailWithin).Token(t)
					signsIn := tc.after(t, a, u)
					r := a.c.PostJSON("/auth/password/reset", map[string]string{"token": link, "new_password": "the reset's long passphrase"})
					if tc.says == "" {
						r.ExpectStatus(http.StatusNoContent)
						a.login(t, email, signsIn)
						return
					}
					if d := r.ExpectError(http.StatusBadRequest, "invalid_token").Map()["error_description"].(string); !strings.Contains(d, tc.says) {
						t.Fatalf("description %q does not say %q", d, tc.says)
					}
					a.loginFails(t, email, "the reset's long passphrase")
					if signsIn != "" {
						a.login(t, email, signsIn)
					}
				})
			}

			// A link an admin sends to a deactivated account sets no password.
			off := a.fx.User(t, "off@example.com", first, "user")
			setActive(a, off.ID, false)
			a.c.PostJSON("/admin/users/"+off.ID+"/password-reset", nil, st.Bearer(root)).ExpectStatus(http.StatusOK)
			link := a.smtp.WaitFor(t, off.Email, mailWithin).Token(t)
			r := a.c.PostJSON("/auth/password/reset", map[string]string{"token": link, "new_password": "the reset's long passphrase"}).
				ExpectError(http.StatusBadRequest, "invalid_token")
			if d := r.Map()["error_description"].(string); !strings.Contains(d, "revoked") {
				t.Fatalf("a deactivated account's link: %q", d)
			}
			setActive(a, off.ID, true)
			a.loginFails(t, off.Email, "the reset's long passphrase")
			a.login(t, off.Email, first)
		})
	}
}

// TestForgotPasswordTiming: the median answer time for a known address is
// within 30% of the one for an unknown address. Each request is measured on
// a quiet server (the background job of the previous one has finished and
// the same pause has passed), so what is compared is the answer alone, which
// must neither wait for the lookup nor compete with it for the CPU.
func TestForgotPasswordTiming(t *testing.T) {
	// Rate limits off: this counts time, not requests (the limits have their own tests).
	a := newAcctEnv(t, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
	a.fx.User(t, "cat@example.com", "cat's first passphrase", "user")
	const n, per = 25, 3 // n samples per address, each the sum of per requests
	const settle = 15 * time.Millisecond
	measure := func(email string) time.Duration {
		var total time.Duration
		for i := 0; i < per; i++ {
			start := time.Now()
			a.c.PostJSON("/auth/password/forgot", map[string]string{"email": email}).ExpectStatus(http.StatusAccepted)
			total += time.Since(start)
			// Let the background job, and the test's own SMTP server,
			// finish, then leave the same quiet time before every request,
			// so each is measured alike whatever the previous job did.
			a.in.App.Accounts.Wait()
			if email == "cat@example.com" {
				a.smtp.WaitFor(t, "cat@example.com", mailWithin)
			}
			time.Sleep(settle)
		}
		return total
	}
	for i := 0; i < 3; i++ { // warm up connections and code paths
		measure("cat@example.com")
		measure("nobody@example.com")
	}
	// A round can be skewed by the other tests' bursts on the shared cores;
	// a real leak (the lookup or the mail inside the answer) skews every
	// round, so only three disagreeing rounds in a row fail.
	var mk, mu time.Duration
	for round := 0; round < 3; round++ {
		var known, unknown []time.Duration
		for i := 0; i < n; i++ { // interleaved, alternating which goes first
			if i%2 == 0 {
				known = append(known, measure("cat@example.com"))
				unknown = append(unknown, measure("nobody@example.com"))
			} else {
				unknown = append(unknown, measure("nobody@example.com"))
				known = append(known, measure("cat@example.com"))
			}
		}
		mk, mu = median(known), median(unknown)
		ratio := float64(mk) / float64(mu)
		t.Logf("round %d: median known %s, unknown %s, ratio %.2f", round, mk, mu, ratio)
		if ratio >= 1/1.3 && ratio <= 1.3 {
			return
		}
	}
	t.Fatalf("forgot-password timing reveals accounts in three rounds: median known %s vs unknown %s", mk, mu)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestRegistrationAndVerification: registration is refused unless enabled;
// when enabled it creates a user with the default role and an unverified
// email, whose link verifies it once.
func TestRegistrationAndVerification(t *testing.T) {
	t.Run("fail/disabled", func(t *testing.T) {
		a := newAcctEnv(t)
		a.c.PostJSON("/auth/register", map[string]string{"email": "eve@example.com", "password": "a long enough passphrase"}).
			ExpectError(http.StatusForbidden, "registration_disabled")
	})
	t.Run("ok/enabled", func(t *testing.T) {
		a := newAcctEnv(t, map[string]string{"PORTCULLIS_PUBLIC_REGISTRATION": "true"})
		r := a.c.PostJSON("/auth/register", map[string]string{"email": "eve@example.com", "password": "a long enough passphrase", "name": "Eve"}).
			ExpectStatus(http.StatusCreated)
		u := r.Map()
		if u["email"] != "eve@example.com" || u["email_verified"] != false || u["name"] != "Eve" || u["active"] != true {
			t.Fatalf("registered user: %s", r.Body)
		}
		if roles := u["roles"].([]any); len(roles) != 1 || roles[0] != "user" {
			t.Fatalf("roles: %v", roles)
		}
		if strings.Contains(string(r.Body), "hash") || strings.Contains(string(r.Body), `"password"`) {
			t.Fatalf("the user object must not hold a password field: %s", r.Body)
		}
		a.c.PostJSON("/auth/register", map[string]string{"email": "EVE@example.com", "password": "another long passphrase"}).
			ExpectError(http.StatusConflict, "conflict")
		a.c.PostJSON("/auth/register", map[string]string{"email": "fay@example.com", "password": "qwertyuiop"}).
			ExpectError(http.StatusBadRequest, "weak_password")

		tr := a.login(t, "eve@example.com", "a long enough passphrase")
		if info := a.c.Get("/userinfo", st.Bearer(tr.AccessToken)).ExpectStatus(200).Map(); info["email_verified"] != false {
			t.Fatalf("userinfo before verification: %v", info)
		}
		first := a.smtp.WaitFor(t, "eve@example.com", mailWithin)
		if link := first.Link(t); !strings.HasPrefix(link, publicURL+"/verify-email?token=") {
			t.Fatalf("verification link %q", link)
		}
		// A resend replaces the first link.
		a.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(tr.AccessToken)).ExpectStatus(http.StatusAccepted)
		second := a.smtp.WaitFor(t, "eve@example.com", mailWithin).Token(t)
		a.c.PostJSON("/auth/email/verify", map[string]string{"token": first.Token(t)}).ExpectError(http.StatusBadRequest, "invalid_token")
		a.c.PostJSON("/auth/email/verify", map[string]string{"token": second}).ExpectStatus(200)
		a.c.PostJSON("/auth/email/verify", map[string]string{"token": second}).ExpectError(http.StatusBadRequest, "invalid_token")
		if info := a.c.Get("/userinfo", st.Bearer(tr.AccessToken)).ExpectStatus(200).Map(); info["email_verified"] != true {
			t.Fatalf("userinfo after verification: %v", info)
		}
		a.c.PostJSON("/auth/email/verify/resend", nil, st.Bearer(tr.AccessToken)).ExpectError(http.StatusConflict, "conflict")
		withID := a.c.PostForm("/oauth2/token", st.PasswordForm("eve@example.com", "a long enough passphrase", "openid email"), st.Basic("web", a.webSecret)).Token()
		if c := decodeClaims(t, withID.IDToken); c["email_verified"] != true {
			t.Fatalf("id token: %v", c)
		}
	})
}
