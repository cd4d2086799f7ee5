package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// A sign-in in progress when its client is deleted or changed (RFC 6749
// §3.1.2, RFC 9700 §4.1): the answer goes to the redirect URI only if the
// client, read again when it is sent, still registers it.

// ccOther is a redirect URI the clients of these tests may also register.
const ccOther = "https://rp.example/other"

// ccAuthorizeURL is a PKCE authorization request of client at base (an
// instance's URL), with extra parameters.
func ccAuthorizeURL(base, client string, extra ...string) string {
	q := url.Values{"client_id": {client}, "redirect_uri": {siCallback}, "response_type": {"code"}, "scope": {"openid"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return base + "/oauth2/authorize?" + q.Encode()
}

// ccGrantsOf are the clients of every live browser session of userID.
func ccGrantsOf(t *testing.T, in *st.Instance, userID string) []string {
	t.Helper()
	page, err := in.App.Accounts.UserSessions(context.Background(), userID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range page.Items {
		out = append(out, s.ClientIDs...)
	}
	return out
}

// ccRefused checks the error page: 400, HTML, no redirect, no form to the
// client, and nothing that names the client's URIs.
func ccRefused(t *testing.T, p siPage) {
	t.Helper()
	if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" ||
		!strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") || strings.Contains(p.body, "rp.example") {
		t.Fatalf("got %d %q, want the error page (400) without a redirect:\n%s", p.StatusCode, p.Header.Get("Location"), p.body)
	}
}

// TestBrowserSignInClientChanged: the login (or consent) page of a request
// is open when an administrator deletes its client, removes its redirect
// URI (through the instance the browser uses, which forgets its cached
// copy at once); the login, allow or deny
// that follows answers the error page (400): no code, no error at the
// redirect URI, in query or form_post mode, and no grant recorded in the
// browser session. Unchanged, or with only another URI removed, the flow
// ends with a code as before. Each fail/ case fails on the code before
// this change (a 303 to the redirect URI).
func TestBrowserSignInClientChanged(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			user := fx.User(t, siEmail, siPassword, "user")
			ctx, op := context.Background(), accounts.Operator()
			login := url.Values{"username": {siEmail}, "password": {siPassword}}
			deleteClient := func(t *testing.T, id string) {
				if err := in.App.Accounts.DeleteClient(ctx, op, id); err != nil {
					t.Fatal(err)
				}
			}
			setURIs := func(uris ...string) func(*testing.T, string) {
				return func(t *testing.T, id string) {
					if _, err := in.App.Accounts.SetClientRedirectURIs(ctx, op, id, uris); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i, tc := range []struct {
				name     string
				third    bool     // third-party: the login comes first, the change on the consent page
				decision string   // on the consent page: "allow" or "deny"
				extra    []string // more authorization parameters
				change   func(t *testing.T, id string)
				code     bool
			}{
				{name: "ok/unchanged", code: true},
				{name: "ok/another_uri_removed", change: setURIs(siCallback), code: true},
				{name: "fail/client_deleted", change: deleteClient},
				{name: "fail/client_deleted_form_post", extra: []string{"response_mode", "form_post"}, change: deleteClient},
				{name: "fail/redirect_uri_removed", change: setURIs(ccOther)},
				{name: "fail/client_deleted_deny", third: true, decision: "deny", change: deleteClient},
				{name: "fail/client_deleted_allow", third: true, decision: "allow", change: deleteClient},
				{name: "fail/redirect_uri_removed_deny", third: true, decision: "deny", change: setURIs(ccOther)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id := fmt.Sprintf("changed-%d", i)
					fx.Client(t, clients.Spec{ID: id, Name: "Changed", FirstParty: !tc.third,
						Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback, ccOther}})
					hc := siBrowser(t)
					page := siGet(t, hc, ccAuthorizeURL(in.URL, id, tc.extra...))
					form := login
					if tc.third {
						page = page.submit(t, hc, login)
						if page.StatusCode != http.StatusOK || !strings.Contains(page.body, `value="deny"`) {
							t.Fatalf("consent page: %d\n%s", page.StatusCode, page.body)
						}
						form = url.Values{"decision": {tc.decision}}
					}
					if tc.change != nil {
						tc.change(t, id)
					}
					done := page.submit(t, hc, form)
					grants := ccGrantsOf(t, in, user.ID)
					if !tc.code {
						ccRefused(t, done)
						if slices.Contains(grants, id) {
							t.Fatalf("a grant of %s was recorded in the browser session: %v", id, grants)
						}
						return
					}
					if loc := done.Header.Get("Location"); done.StatusCode != http.StatusSeeOther ||
						!strings.HasPrefix(loc, siCallback+"?") || !strings.Contains(loc, "code=") {
						t.Fatalf("got %d %q, want a code at the redirect URI", done.StatusCode, loc)
					}
					if !slices.Contains(grants, id) {
						t.Fatalf("no grant of %s in the browser session: %v", id, grants)
					}
				})
			}
		})
	}
}

// TestBrowserSignInClientDeletedElsewhere: the reviewer's case across
// instances of one deployment. The login page is served by instance 0
// (which so holds the client in its cache); the client is deleted through
// instance 1. Once instance 0 refuses a fresh request for the client (its
// cache keeps a client at most app.ClientCacheTTL), the sign-in on the
// page answers the error page too, with no code and no grant: the pending
// request is checked through the same cache as a fresh one, so it is never
// answered later than a fresh request is refused. (The wait is the cache's
// documented staleness; it is polled, not slept through.)
func TestBrowserSignInClientDeletedElsewhere(t *testing.T) {
	env := st.NewEnv(t, st.SQLite)
	ins := []*st.Instance{st.Start(t, env), st.Start(t, env)}
	fx := st.NewFixtures(t, ins[0].App.Core)
	user := fx.User(t, siEmail, siPassword, "user")
	fx.Client(t, clients.Spec{ID: "first", Name: "First App", FirstParty: true,
		Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback}})
	hc := siBrowser(t)
	login := siGet(t, hc, ccAuthorizeURL(ins[0].URL, "first"))
	if login.StatusCode != http.StatusOK {
		t.Fatalf("login page: %d", login.StatusCode)
	}
	if err := ins[1].App.Accounts.DeleteClient(context.Background(), accounts.Operator(), "first"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(app.ClientCacheTTL + 5*time.Second); ; {
		fresh := siGet(t, siBrowser(t), ccAuthorizeURL(ins[0].URL, "first"))
		if fresh.StatusCode == http.StatusBadRequest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance 0 still serves the deleted client %v after its deletion: %d", app.ClientCacheTTL, fresh.StatusCode)
		}
		time.Sleep(50 * time.Millisecond) // the cache's TTL has no clock to advance from here
	}
	done := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
	ccRefused(t, done)
	if grants := ccGrantsOf(t, ins[0], user.ID); slices.Contains(grants, "first") {
		t.Fatalf("a grant of the deleted client was recorded: %v", grants)
	}
}

// TestBrowserSignInClientRecreated: a first-party client is deleted and
// created again under its id as a third-party application with the same
// redirect URI (another admin taking the freed id) while a request made
// to the deleted one waits: pending at the login page, pushed (PAR) and
// opened before the change, or pushed before it and opened after. The
// login that follows (or, for the one opened after, the opening itself)
// answers the error page (400): no code, no grant recorded, as for a
// deleted client, since the request was made before this client was
// created (token.IssuedTo, as at the token endpoint). A
// request made to the new client asks consent (its flags, not the
// deleted one's). Found by a review: before the change the login answered
// a code with no consent page, which the new client redeemed.
func TestBrowserSignInClientRecreated(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			user := fx.User(t, siEmail, siPassword, "user")
			ctx, op := context.Background(), accounts.Operator()
			login := url.Values{"username": {siEmail}, "password": {siPassword}}
			push := func(t *testing.T, id, secret string) string {
				var out struct {
					RequestURI string `json:"request_uri"`
				}
				in.Client(t).PostForm("/oauth2/par", parRequest("st", oauth2.GenerateVerifier()), st.Basic(id, secret)).
					ExpectStatus(http.StatusCreated).JSON(&out)
				return in.URL + "/oauth2/authorize?" + url.Values{"client_id": {id}, "request_uri": {out.RequestURI}}.Encode()
			}
			for i, tc := range []struct {
				name string
				// request makes the request to the first-party client
				// (id, secret) and returns the URL that opens it, before
				// (open) or after the change.
				request    func(t *testing.T, id, secret string) string
				openBefore bool
			}{
				{name: "pending", request: func(_ *testing.T, id, _ string) string { return ccAuthorizeURL(in.URL, id) }, openBefore: true},
				{name: "pushed_opened_before", request: push, openBefore: true},
				{name: "pushed_opened_after", request: push},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id := fmt.Sprintf("recreated-%d", i)
					spec := clients.Spec{ID: id, Name: "First App", FirstParty: true,
						Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback}}
					u := tc.request(t, id, fx.Client(t, spec))
					hc := siBrowser(t)
					var page siPage // the login page opened before the change
					if tc.openBefore {
						page = siGet(t, hc, u)
					}
					if err := in.App.Accounts.DeleteClient(ctx, op, id); err != nil {
						t.Fatal(err)
					}
					spec.FirstParty, spec.Name = false, "Someone else's app"
					fx.Client(t, spec)
					other := siBrowser(t)
					fresh := siGet(t, other, ccAuthorizeURL(in.URL, id)).submit(t, other, login)
					if fresh.StatusCode != http.StatusOK || !strings.Contains(fresh.body, `value="deny"`) {
						t.Fatalf("a request made to the new client: %d %q, want its consent page", fresh.StatusCode, fresh.Header.Get("Location"))
					}
					if tc.openBefore {
						if page.StatusCode != http.StatusOK {
							t.Fatalf("login page: %d\n%s", page.StatusCode, page.body)
						}
						ccRefused(t, page.submit(t, hc, login))
					} else {
						ccRefused(t, siGet(t, hc, u))
					}
					if grants := ccGrantsOf(t, in, user.ID); slices.Contains(grants, id) {
						t.Fatalf("a grant of %s was recorded in the browser session: %v", id, grants)
					}
				})
			}
		})
	}
}
