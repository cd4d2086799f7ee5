package pages_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// Passkeys in headless Chromium, with a CDP virtual authenticator (CTAP2,
// internal transport, resident keys, user verification). Portcullis is
// reached as http://localhost:PORT (a WebAuthn RP ID is a domain, never an
// IP address; localhost and *.localhost are secure contexts), with
// PORTCULLIS_WEBAUTHN_RP_ID=localhost and PORTCULLIS_WEBAUTHN_ORIGINS
// listing http://localhost:PORT and http://auth.localhost:PORT only. Each
// refusal is the server's: the browser makes a valid assertion, which
// Portcullis refuses.

// authenticator is a virtual authenticator in a tab.
type authenticator struct {
	tb *tab
	id webauthn.AuthenticatorID
}

func addAuthenticator(t *testing.T, tb *tab) *authenticator {
	t.Helper()
	var id webauthn.AuthenticatorID
	browse(t, tb.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		res, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{Protocol: webauthn.AuthenticatorProtocolCtap2,
				Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
				HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}})
		if err != nil {
			return err
		}
		id = res.AuthenticatorID
		return nil
	}))
	return &authenticator{tb: tb, id: id}
}

// credentials are the authenticator's credentials, private keys included.
func (a *authenticator) credentials(t *testing.T) []*webauthn.Credential {
	t.Helper()
	return value(t, a.tb.ctx, func(ctx context.Context, tg *chromedp.Target) ([]*webauthn.Credential, error) {
		res, err := cdp.Call(ctx, tg, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: a.id})
		return res.Credentials, err
	})
}

// replace swaps every credential of the authenticator for c.
func (a *authenticator) replace(t *testing.T, c webauthn.Credential) {
	t.Helper()
	browse(t, a.tb.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.ClearCredentials, webauthn.ClearCredentialsParams{AuthenticatorID: a.id}); err != nil {
			return err
		}
		// Only the credential itself: this Chromium refuses the CMTG
		// members GetCredentials reports, even empty.
		cred := map[string]any{"credentialId": base64.StdEncoding.EncodeToString(c.CredentialID),
			"isResidentCredential": c.IsResidentCredential, "rpId": c.RpID,
			"privateKey": base64.StdEncoding.EncodeToString(c.PrivateKey), "signCount": c.SignCount}
		if len(c.UserHandle) > 0 {
			cred["userHandle"] = base64.StdEncoding.EncodeToString(c.UserHandle)
		}
		_, err := cdp.Call(ctx, tg, cdp.Command[map[string]any, cdp.Empty]{Method: webauthn.CommandAddCredential},
			map[string]any{"authenticatorId": a.id, "credential": cred})
		return err
	}))
}

// signOut forgets every cookie of the browser (the next sign-in starts
// from the password).
func (tb *tab) signOut(t *testing.T) {
	t.Helper()
	browse(t, tb.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.ClearBrowserCookies, cdp.Empty{})
		return err
	}))
}

// forward relays a new loopback port to addr, byte for byte (the Host
// header names the new port), and returns the port.
func forward(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// claimsOf decodes the payload of a JWT the test received over TLS-less
// loopback from Portcullis (its signature was checked by the relying party).
func claimsOf(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func amrOf(t *testing.T, raw string) []string {
	t.Helper()
	var amr []string
	list, _ := claimsOf(t, raw)["amr"].([]any)
	for _, v := range list {
		s, _ := v.(string)
		amr = append(amr, s)
	}
	return amr
}

// TestBrowserPasskey: a person registers a passkey on /account/security and
// signs in with it on the login page (password, then "Use your passkey"),
// reaching the relying party's callback with amr [pwd hwk user mfa] and
// acr mfa; a
// cloned authenticator (the credential re-added with a lower sign count),
// a wrong origin (one PORTCULLIS_WEBAUTHN_ORIGINS does not list) and a
// wrong RP ID are each refused on the second step, which shows the step
// again and starts no session. No page reports a CSP violation.
func TestBrowserPasskey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	issuer := "http://localhost:" + port
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_ISSUER"] = issuer
	env["PORTCULLIS_WEBAUTHN_RP_ID"] = "localhost"
	env["PORTCULLIS_WEBAUTHN_ORIGINS"] = issuer + ",http://auth.localhost:" + port
	// Each refused passkey and each password step not yet finished count
	// in the account's login throttle: room for the three refusals.
	env["PORTCULLIS_LOGIN_FAILURE_LIMIT"] = "20"
	in := st.StartOn(t, env, ln)
	fx := st.NewFixtures(t, in.App.Core)
	const email = "pia@example.com"
	user := fx.User(t, email, goodPassword, "user")
	rpLn := listenIPv6(t)
	fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Public: true, FirstParty: true,
		Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{"http://" + rpLn.Addr().String() + "/callback"}})
	notes := newRelyingParty(t, issuer, rpLn, "notes", "", oidc.ScopeOpenID)

	browser := newBrowser(t)
	tb := newTab(t, browser)
	auth := addAuthenticator(t, tb)

	// signIn goes from the relying party to Portcullis's login page and
	// types the password; it returns the status of the page after it.
	signIn := func(t *testing.T) int64 {
		t.Helper()
		open(t, tb.ctx, notes.URL+"/")
		if status := tb.click(t, "#signin"); status != http.StatusOK {
			t.Fatalf("login page: %d: %s", status, text(t, tb.ctx))
		}
		browse(t, tb.ctx, fill("username", email), fill("password", goodPassword))
		return submit(t, tb.ctx)
	}

	// A first sign-in with the password alone, then /account/security.
	if status := signIn(t); status != http.StatusOK || !strings.HasPrefix(location(t, tb.ctx), notes.URL+"/callback?") {
		t.Fatalf("password sign-in: %d at %s: %s", status, location(t, tb.ctx), text(t, tb.ctx))
	}
	if status := open(t, tb.ctx, issuer+"/account/security"); status != http.StatusOK {
		t.Fatalf("/account/security: %d", status)
	}
	mustContain(t, "the security page", text(t, tb.ctx), "Two-step verification", "Set up an authenticator app", "You have no passkey")
	tb.noViolation(t, "security page")
	accessible(t, tb.ctx, "Set up an authenticator app", "name", "Add a passkey")
	browse(t, tb.ctx, fill("name", "Laptop"))
	if status := tb.click(t, "#passkey-add"); status != http.StatusOK {
		t.Fatalf("add a passkey: %d: %s", status, text(t, tb.ctx))
	}
	mustContain(t, "the passkey page", text(t, tb.ctx), "Add a passkey", "Laptop")
	tb.noViolation(t, "passkey page")
	accessible(t, tb.ctx, "webauthn")
	if status := tb.click(t, "#webauthn"); status != http.StatusOK {
		t.Fatalf("create the passkey: %d: %s", status, text(t, tb.ctx))
	}
	if loc := location(t, tb.ctx); loc != issuer+"/account/security" {
		t.Fatalf("after registering: at %s: %s", loc, text(t, tb.ctx))
	}
	// A first passkey comes with recovery codes, shown this once.
	mustContain(t, "the recovery codes", text(t, tb.ctx), "Your passkey is set up", "Save these recovery codes", "I have saved my codes")
	tb.noViolation(t, "passkey registered, its recovery codes")
	if n := value(t, tb.ctx, chromedp.Evaluate[int](`document.querySelectorAll('.codes li').length`)); n != 10 {
		t.Fatalf("%d recovery codes shown, want 10: %s", n, text(t, tb.ctx))
	}
	if status := open(t, tb.ctx, value(t, tb.ctx, chromedp.Evaluate[string](`document.querySelector('a.button').href`))); status != http.StatusOK {
		t.Fatalf("back to the security page: %d", status)
	}
	mustContain(t, "the security page", text(t, tb.ctx), "Laptop", "You have 10 unused recovery codes")
	tb.noViolation(t, "passkey registered")
	creds := auth.credentials(t)
	if len(creds) != 1 || creds[0].RpID != "localhost" {
		t.Fatalf("authenticator credentials %+v", creds)
	}
	stored, err := in.App.Core.Store.ListWebAuthnCredentials(t.Context(), user.ID)
	if err != nil || len(stored) != 1 || stored[0].Name != "Laptop" ||
		stored[0].ID != base64.RawURLEncoding.EncodeToString(creds[0].CredentialID) {
		t.Fatalf("stored credentials %+v, %v", stored, err)
	}

	// The passkey as the second step: password, then the button.
	tb.signOut(t)
	if status := signIn(t); status != http.StatusOK {
		t.Fatalf("password: %d", status)
	}
	mustContain(t, "the second step", text(t, tb.ctx), "Confirm it is you", "Use your passkey")
	tb.noViolation(t, "second step")
	accessible(t, tb.ctx, "webauthn")
	if status := tb.click(t, "#webauthn"); status != http.StatusOK {
		t.Fatalf("passkey: %d: %s", status, text(t, tb.ctx))
	}
	if loc := location(t, tb.ctx); !strings.HasPrefix(loc, notes.URL+"/callback?") {
		t.Fatalf("after the passkey: at %s: %s", loc, text(t, tb.ctx))
	}
	notes.mu.Lock()
	idt := notes.idTokens[len(notes.idTokens)-1]
	notes.mu.Unlock()
	if amr := amrOf(t, idt); !slices.Equal(amr, []string{"pwd", "hwk", "user", "mfa"}) || claimsOf(t, idt)["acr"] != "mfa" {
		t.Fatalf("id token amr %v acr %v, want [pwd hwk user mfa] and mfa", amr, claimsOf(t, idt)["acr"])
	}
	tb.noViolation(t, "signed in with the passkey")
	good := *auth.credentials(t)[0]

	// refused signs in up to the second step at base, optionally lets
	// prepare change the page, presses the passkey button, and expects the
	// step again with its error and no session.
	refused := func(t *testing.T, what, base string, prepare string) {
		t.Helper()
		tb.signOut(t)
		verifier := oauth2.GenerateVerifier()
		q := url.Values{"response_type": {"code"}, "client_id": {"notes"}, "redirect_uri": {notes.URL + "/callback"},
			"scope": {"openid"}, "state": {"s"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
			"code_challenge_method": {"S256"}}
		if status := open(t, tb.ctx, base+"/oauth2/authorize?"+q.Encode()); status != http.StatusOK {
			t.Fatalf("%s: login page %d", what, status)
		}
		browse(t, tb.ctx, fill("username", email), fill("password", goodPassword))
		if status := submit(t, tb.ctx); status != http.StatusOK {
			t.Fatalf("%s: password %d: %s", what, status, text(t, tb.ctx))
		}
		if prepare != "" {
			browse(t, tb.ctx, chromedp.Evaluate[chromedp.Void](prepare+"; null"))
		}
		if status := tb.click(t, "#webauthn"); status != http.StatusBadRequest {
			t.Fatalf("%s: the passkey answered %d, want the step again (400): %s", what, status, text(t, tb.ctx))
		}
		mustContain(t, what, text(t, tb.ctx), "Your passkey could not be used", "Use your passkey")
		for _, c := range tb.cookies(t, base) {
			if strings.Contains(c.Name, "portcullis-session") {
				t.Fatalf("%s: a session cookie was set", what)
			}
		}
		tb.noViolation(t, what)
	}

	// A cloned authenticator: the same key with a lower sign count.
	clone := good
	clone.SignCount = 0
	auth.replace(t, clone)
	refused(t, "cloned authenticator", issuer, "")

	// A wrong origin: the same server through another port of localhost
	// (the RP ID holds for it, but it is not one of
	// PORTCULLIS_WEBAUTHN_ORIGINS).
	fresh := good
	fresh.SignCount = good.SignCount + 100
	auth.replace(t, fresh)
	refused(t, "wrong origin", "http://localhost:"+forward(t, ln.Addr().String()), "")

	// A wrong RP ID: at an allowed origin, the assertion is made for
	// auth.localhost (the key copied under that RP ID, the page's options
	// changed to ask for it), not for the configured localhost.
	elsewhere := good
	elsewhere.SignCount = good.SignCount + 200
	elsewhere.RpID = "auth.localhost"
	auth.replace(t, elsewhere)
	refused(t, "wrong RP ID", "http://auth.localhost:"+port,
		`(() => { const b = document.getElementById('webauthn'); const o = JSON.parse(b.dataset.options);
		  o.publicKey.rpId = 'auth.localhost'; b.dataset.options = JSON.stringify(o); })()`)

	// Each was the server's refusal of the assertion, audited mfa.failed.
	failed, err := in.App.Core.Store.ListAudit(t.Context(), store.AuditFilter{Action: "mfa.failed", TargetID: user.ID, Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if len(failed.Items) != 3 {
		t.Fatalf("mfa.failed events %+v, want the three refusals", failed.Items)
	}
	for _, e := range failed.Items {
		if e.Details["method"] != "webauthn" || e.Details["reason"] != "bad_code" {
			t.Fatalf("mfa.failed %+v", e)
		}
	}

	// The real key still works afterwards (none of the refusals changed
	// the stored counter past it).
	fresh.SignCount = good.SignCount + 300
	auth.replace(t, fresh)
	tb.signOut(t)
	signIn(t)
	if status := tb.click(t, "#webauthn"); status != http.StatusOK || !strings.HasPrefix(location(t, tb.ctx), notes.URL+"/callback?") {
		t.Fatalf("the real key after the refusals: %d at %s", status, location(t, tb.ctx))
	}
	d := &deployment{in: in}
	d.assertNoSecretInLogs(t, goodPassword)
}
