package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestBackchannelLogoutSurvivesOutageAndRestart: a relying party's
// back-channel logout endpoint is down (nothing listens on its port) when
// the person signs out, and stays down for 30 s; meanwhile the Portcullis
// instance that queued the logout token is stopped and another one (a
// restart: nothing in memory survives) takes over. When the receiver comes
// back, it gets a logout token for the grant, signed by Portcullis's keys
// and verified by keys/verify (typ logout+jwt, iss, aud, sub, sid, events,
// no nonce), and the failed attempts were audited. Time is the behaviour
// here (the outage lasts 30 s of real time, and the retry schedule is the
// product's), so the test waits for real, in parallel with the others.
func TestBackchannelLogoutSurvivesOutageAndRestart(t *testing.T) {
	t.Parallel()
	const issuer = "https://id.portcullis.test" // one issuer across the restart
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_ISSUER"] = issuer
	first := st.Start(t, env)
	fx := st.NewFixtures(t, first.App.Core)
	user := fx.User(t, siEmail, siPassword, "user")

	// A port nothing listens on yet: the receiver is down.
	reserve, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := reserve.Addr().String()
	reserve.Close()
	secret := fx.Client(t, clients.Spec{ID: "relying-party", Name: "RP", FirstParty: true,
		Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
		PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: "http://" + addr + "/backchannel-logout"})

	// Sign in through the login page; redeem the code.
	hc := siBrowser(t)
	conf := &oauth2.Config{ClientID: "relying-party", ClientSecret: secret, RedirectURL: siCallback, Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: first.URL + "/oauth2/authorize", TokenURL: first.URL + "/oauth2/token"}}
	pkce := oauth2.GenerateVerifier()
	login := siGet(t, hc, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(pkce)))
	back := login.submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}})
	loc, err := url.Parse(back.Header.Get("Location"))
	if back.StatusCode != http.StatusSeeOther || err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: %d %q", back.StatusCode, back.Header.Get("Location"))
	}
	tok, err := conf.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(pkce))
	if err != nil {
		t.Fatal(err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	var idClaims struct {
		SID string `json:"sid"`
	}
	if parts := strings.Split(idToken, "."); len(parts) == 3 {
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		_ = json.Unmarshal(payload, &idClaims)
	}
	if idClaims.SID == "" {
		t.Fatalf("id token without sid: %q", idToken)
	}

	// Sign out: a trusted request, back to the relying party at once.
	loggedOut := time.Now()
	out := siGet(t, hc, first.URL+"/oauth2/logout?"+url.Values{"id_token_hint": {idToken},
		"post_logout_redirect_uri": {siPostLogout}, "state": {"bye"}}.Encode())
	if out.StatusCode != http.StatusSeeOther || !strings.HasPrefix(out.Header.Get("Location"), siPostLogout) {
		t.Fatalf("logout: %d %q", out.StatusCode, out.Header.Get("Location"))
	}
	// The first attempt fails (connection refused) and is audited.
	failures := func(in *st.Instance) int {
		page, err := in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "logout.backchannel_failed"})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Items)
	}
	for deadline := time.Now().Add(20 * time.Second); failures(first) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed back-channel attempt was audited")
		}
	}

	// A restart: the instance that queued the token stops, another starts.
	first.Stop()
	second := st.Start(t, env)

	// The receiver comes back 30 s after the logout.
	time.Sleep(time.Until(loggedOut.Add(30 * time.Second)))
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: issuer, JWKSURL: second.URL + "/.well-known/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := verify.NewLogoutVerifier(keys, verify.LogoutConfig{Issuer: issuer, ClientID: "relying-party"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *verify.LogoutClaims, 8)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the receiver cannot come back on %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /backchannel-logout", verify.LogoutHandler(lv, func(_ context.Context, c *verify.LogoutClaims) error {
		got <- c
		return nil
	}))
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	srv.Start()
	t.Cleanup(srv.Close)

	select {
	case c := <-got:
		if c.Subject != user.ID || c.SessionID != idClaims.SID {
			t.Fatalf("logout token sub %q sid %q, want %q %q", c.Subject, c.SessionID, user.ID, idClaims.SID)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the receiver never got its logout token after coming back")
	}
	if n := failures(second); n < 2 {
		t.Fatalf("%d failed attempts audited during a 30 s outage, want several", n)
	}

}
