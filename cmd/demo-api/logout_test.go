package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/backchannel"
	"github.com/portcullis-auth/portcullis/store"
)

// postLogout POSTs a logout token to the demo's back-channel logout
// endpoint and returns the status, Cache-Control and the error body.
func (s *stack) postLogout(t *testing.T, token string) (int, string, map[string]string) {
	t.Helper()
	resp, err := http.PostForm(s.apiURL+"/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]string
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("body %q: %v", raw, err)
		}
	}
	return resp.StatusCode, resp.Header.Get("Cache-Control"), body
}

// TestDemoAPIBackchannelLogout: a logout token minted by Portcullis's own
// back-channel code with Portcullis's signing key is accepted at POST
// /backchannel-logout, and from then on the logged-out session's access
// tokens are refused with 401 invalid_token (before the logout they are
// accepted; before the demo had the endpoint, the POST was a 404 and the
// token stayed good), while another session's tokens still pass. Logout
// tokens for another client, from another issuer or replayed are refused
// with 400 invalid_request and end nothing.
func TestDemoAPIBackchannelLogout(t *testing.T) {
	s := startStack(t, nil)
	viewer := s.login(t, "web", "viewer", "").AccessToken
	editor := s.login(t, "web", "editor", "").AccessToken
	claims := jwtPart(t, viewer, 1)
	sid, _ := claims["sid"].(string)
	sub, _ := claims["sub"].(string)
	if sid == "" || sub == "" {
		t.Fatalf("the access token has no sid or sub: %v", claims)
	}
	iat := time.Unix(int64(claims["iat"].(float64)), 0)
	for _, tok := range []string{viewer, editor} {
		if a := s.call(t, "GET", "/me", tok, nil); a.status != http.StatusOK {
			t.Fatalf("before the logout: %d %s", a.status, a.raw)
		}
	}
	mint := func(issuer, clientID string) string {
		tok, err := backchannel.Mint(s.in.App.Core.Keys, issuer, store.BackchannelLogout{ClientID: clientID, Subject: sub, SID: sid}, iat)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(s.in.Config.Issuer, "demo-api")
	refusals := []struct {
		name, token, desc string
	}{
		{"fail/another client's logout token", mint(s.in.Config.Issuer, "web"), "not meant for this client"},
		{"fail/another issuer", mint("https://other.example", "demo-api"), "another issuer"},
		{"fail/an access token", viewer, "not a logout token"},
	}
	for _, r := range refusals {
		status, cc, body := s.postLogout(t, r.token)
		if status != http.StatusBadRequest || cc != "no-store" || body["error"] != "invalid_request" || !strings.Contains(body["error_description"], r.desc) {
			t.Fatalf("%s: %d %q %v", r.name, status, cc, body)
		}
		if a := s.call(t, "GET", "/me", viewer, nil); a.status != http.StatusOK {
			t.Fatalf("%s ended the session: %d", r.name, a.status)
		}
	}
	if status, cc, body := s.postLogout(t, good); status != http.StatusOK || cc != "no-store" || body != nil {
		t.Fatalf("logout: %d %q %v", status, cc, body)
	}
	a := s.call(t, "GET", "/me", viewer, nil)
	if a.status != http.StatusUnauthorized || !strings.Contains(a.challenge, `error="invalid_token"`) || a.body["error"] != "invalid_token" {
		t.Fatalf("the logged-out session's token: %d %q %s", a.status, a.challenge, a.raw)
	}
	if a := s.call(t, "GET", "/projects", viewer, nil); a.status != http.StatusUnauthorized {
		t.Fatalf("the logged-out session's token on a scoped route: %d", a.status)
	}
	if a := s.call(t, "GET", "/me", editor, nil); a.status != http.StatusOK {
		t.Fatalf("another session after the logout: %d %s", a.status, a.raw)
	}
	if status, _, body := s.postLogout(t, good); status != http.StatusBadRequest || !strings.Contains(body["error_description"], "already used") {
		t.Fatalf("replayed logout token: %d %v", status, body)
	}
	if strings.Contains(s.logs.String(), good) {
		t.Fatal("the demo logged a logout token")
	}
}

// queue is a minimal in-memory back-channel queue for the end-to-end test;
// every Complete or Retry is reported on done.
type queue struct {
	mu    sync.Mutex
	items map[string]store.BackchannelLogout
	done  chan string
}

func (q *queue) EnqueueBackchannelLogouts(_ context.Context, ds []store.BackchannelLogout) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		q.items[d.ID] = d
	}
	return nil
}

func (q *queue) ClaimBackchannelLogouts(_ context.Context, c store.BackchannelClaim) ([]store.BackchannelLogout, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var due []store.BackchannelLogout
	for _, d := range q.items {
		if !d.NextAttemptAt.After(c.Now) {
			due = append(due, d)
		}
	}
	out := c.Pick(due)
	for i := range out {
		out[i].NextAttemptAt = c.Now.Add(c.Lease)
		q.items[out[i].ID] = out[i]
	}
	return out, nil
}

func (q *queue) CompleteBackchannelLogout(_ context.Context, id string) error {
	q.mu.Lock()
	delete(q.items, id)
	q.mu.Unlock()
	q.done <- "complete"
	return nil
}

func (q *queue) RetryBackchannelLogout(_ context.Context, id string, next time.Time, lastErr string) error {
	q.mu.Lock()
	delete(q.items, id) // one attempt is all this test makes
	q.mu.Unlock()
	q.done <- "retry: " + lastErr
	return nil
}

type audits struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *audits) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

// TestDemoAPIBackchannelLogoutEndToEnd: Portcullis's Notifier, signing with
// Portcullis's keys, delivers a logout token to the demo's endpoint over
// HTTP; the demo answers 200 (the delivery completes at the first attempt,
// nothing is audited) and refuses the session's access token from then on.
func TestDemoAPIBackchannelLogoutEndToEnd(t *testing.T) {
	s := startStack(t, nil)
	tok := s.login(t, "web", "editor", "").AccessToken
	claims := jwtPart(t, tok, 1)
	if a := s.call(t, "GET", "/me", tok, nil); a.status != http.StatusOK {
		t.Fatalf("before the logout: %d", a.status)
	}
	q := &queue{items: map[string]store.BackchannelLogout{}, done: make(chan string, 4)}
	au := &audits{}
	n, err := backchannel.New(backchannel.Config{Issuer: s.in.Config.Issuer, Signer: s.in.App.Core.Keys, Queue: q, Audit: au})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	err = n.Enqueue(ctx, []store.BackchannelLogout{{ClientID: "demo-api", URI: s.apiURL + "/backchannel-logout",
		Subject: claims["sub"].(string), SID: claims["sid"].(string)}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-q.done:
		if got != "complete" {
			t.Fatalf("delivery: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	au.mu.Lock()
	if len(au.events) != 0 {
		t.Fatalf("audited %+v", au.events)
	}
	au.mu.Unlock()
	if a := s.call(t, "GET", "/me", tok, nil); a.status != http.StatusUnauthorized || a.body["error"] != "invalid_token" {
		t.Fatalf("after the logout: %d %s", a.status, a.raw)
	}
}
