package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// stubSubject is a SubjectTokenHandler that knows one token.
type stubSubject struct {
	user     store.User
	err      error
	authTime time.Time
}

func (h stubSubject) ExchangeSubjectToken(_ context.Context, _ store.Client, tok string, _ RequestMeta) (ExchangedSubject, error) {
	if h.err != nil {
		return ExchangedSubject{}, h.err
	}
	if tok != "good" {
		return ExchangedSubject{}, errors.New("unknown subject token")
	}
	return ExchangedSubject{User: h.user, AMR: []string{"fed"}, Details: map[string]string{"method": "stub"}, AuthTime: h.authTime}, nil
}

func exchangeReq(t *testing.T, client, subject, typ string, extra map[string]string) (TokenRequest, error) {
	t.Helper()
	params := map[string]string{"grant_type": GrantTokenExchange, "subject_token": subject, "subject_token_type": typ}
	for k, v := range extra {
		params[k] = v
	}
	return ParseTokenRequest(params, ClientCredentials{ID: client, Secret: "s3cret"})
}

// TestTokenExchangeFramework: a registered subject_token_type's handler
// decides the user and the one issuance path issues (amr kept,
// issued_token_type set, login.succeeded with the handler's details);
// refusals are invalid_request, other apierr answers pass through, an
// unregistered type is invalid_request, a client without the grant is
// unauthorized_client, and the parameters are checked.
func TestTokenExchangeFramework(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	e.dir.clients["xchg"] = store.Client{ID: "xchg", SecretHash: HashSecret("s3cret"), Grants: []string{GrantTokenExchange}}
	u1 := e.dir.users["u1"]
	e.svc.RegisterSubjectTokenType(TokenTypeIDToken, stubSubject{user: u1})
	e.svc.RegisterSubjectTokenType("urn:test:down", stubSubject{err: apierr.ErrTemporarilyUnavailable})
	e.svc.RegisterSubjectTokenType("urn:test:inactive", stubSubject{user: e.dir.users["u2"]})
	ctx := context.Background()

	req, err := exchangeReq(t, "xchg", "good", TokenTypeIDToken, map[string]string{"scope": "openid"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.svc.Exchange(ctx, req, RequestMeta{IP: "192.0.2.1"})
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if resp.IssuedTokenType != TokenTypeAccessToken || resp.AccessToken == "" || resp.IDToken == "" || resp.RefreshToken != "" {
		t.Fatalf("response %+v", resp)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(resp.IDToken, ".")[1])
	var idc struct {
		Sub string   `json:"sub"`
		AMR []string `json:"amr"`
	}
	if err != nil || json.Unmarshal(payload, &idc) != nil || idc.Sub != "u1" || !slices.Equal(idc.AMR, []string{"fed"}) {
		t.Fatalf("id token claims %s", payload)
	}
	last := e.audit.events[len(e.audit.events)-1]
	if last.Action != "login.succeeded" || last.Details["method"] != "stub" || last.Details["grant"] != GrantTokenExchange {
		t.Fatalf("audit %+v", last)
	}
	if e.metrics.n["token_exchange"] != 1 {
		t.Fatalf("metrics %v", e.metrics.n)
	}

	for _, tc := range []struct {
		name, client, subject, typ string
		extra                      map[string]string
		code                       string
	}{
		{"fail/refused_subject_token", "xchg", "bad", TokenTypeIDToken, nil, "invalid_request"},
		{"fail/unregistered_type", "xchg", "good", "urn:test:nope", nil, "invalid_request"},
		{"fail/handler_unavailable_passes_through", "xchg", "good", "urn:test:down", nil, "temporarily_unavailable"},
		{"fail/deactivated_user", "xchg", "good", "urn:test:inactive", nil, "invalid_request"},
		{"fail/client_without_grant", "web", "good", TokenTypeIDToken, nil, "unauthorized_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := exchangeReq(t, tc.client, tc.subject, tc.typ, tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.svc.Exchange(ctx, req, RequestMeta{})
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("Exchange = %v, want %s", err, tc.code)
			}
		})
	}
	for _, tc := range []struct {
		name    string
		subject string
		typ     string
		extra   map[string]string
		code    string
	}{
		{"fail/no_subject_token", "", TokenTypeIDToken, nil, "invalid_request"},
		{"fail/no_subject_token_type", "good", "", nil, "invalid_request"},
		{"fail/actor_token", "good", TokenTypeIDToken, map[string]string{"actor_token": "x", "actor_token_type": TokenTypeIDToken}, "invalid_request"},
		{"fail/requested_refresh_token", "good", TokenTypeIDToken, map[string]string{"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "invalid_request"},
		{"fail/audience", "good", TokenTypeIDToken, map[string]string{"audience": "api"}, "invalid_target"},
		{"fail/resource", "good", TokenTypeIDToken, map[string]string{"resource": "https://api.example"}, "invalid_target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := exchangeReq(t, "xchg", tc.subject, tc.typ, tc.extra)
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("ParseTokenRequest = %v, want %s", err, tc.code)
			}
		})
	}
}

// A session begun by token exchange follows the code flow's rule for a
// third-party application (ThirdPartyApp: naming no permission gets none),
// and a refresh never widens what the exchange granted (RFC 6749 §6), even
// when the user gains a role or the refresh names a permission the user
// holds. A first-party client's exchanged session, and a password
// front-end's, follow the user, as their password grants do.
func TestTokenExchangeRefreshKeepsToTheGrant(t *testing.T) {
	exchangeAndRefresh := []string{GrantTokenExchange, GrantRefreshToken}
	cases := []struct {
		name       string
		client     store.Client
		scope      string
		want       string // the exchange's scope, which every refresh keeps
		wantLater  string // the refresh's scope after the user gains a role
		widenScope string // a refresh naming this is refused
	}{
		{"third-party naming no permission gets none, and keeps none",
			store.Client{ID: "partner", SecretHash: HashSecret("s3cret"), Grants: exchangeAndRefresh},
			"openid", "openid", "openid", "docs:read"},
		{"third-party naming one permission keeps to it",
			store.Client{ID: "partner", SecretHash: HashSecret("s3cret"), Grants: exchangeAndRefresh},
			"openid docs:read", "docs:read openid", "docs:read openid", "docs:write"},
		{"a password front-end exchanging (no code flow) follows the user, as its password logins do",
			store.Client{ID: "partner", SecretHash: HashSecret("s3cret"), Grants: append([]string{GrantPassword}, exchangeAndRefresh...)},
			"openid", "docs:read docs:write openid", "docs:read docs:write openid", ""},
		{"third-party with the code flow and the password grant keeps to the exchange's grant",
			store.Client{ID: "partner", SecretHash: HashSecret("s3cret"), Grants: append([]string{GrantPassword, GrantAuthorizationCode}, exchangeAndRefresh...),
				RedirectURIs: []string{testRedirect}},
			"openid", "openid", "openid", "docs:read"},
		{"first-party naming no permission follows the user",
			store.Client{ID: "partner", SecretHash: HashSecret("s3cret"), Grants: exchangeAndRefresh, FirstParty: true},
			"openid", "docs:read docs:write openid", "docs:read docs:write openid", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "RS256")
			e.dir.clients[tc.client.ID] = tc.client
			e.svc.RegisterSubjectTokenType(TokenTypeIDToken, stubSubject{user: e.dir.users["u1"]})
			req, err := exchangeReq(t, tc.client.ID, "good", TokenTypeIDToken, map[string]string{"scope": tc.scope})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.svc.Exchange(context.Background(), req, RequestMeta{})
			if err != nil {
				t.Fatal(err)
			}
			if scopeOf(resp) != tc.want || resp.RefreshToken == "" {
				t.Fatalf("exchange: scope %q (want %q), refresh token %t", scopeOf(resp), tc.want, resp.RefreshToken != "")
			}
			refresh := func(rt, scope string) (Response, error) {
				return e.exchange(TokenRequest{GrantType: GrantRefreshToken, Client: ClientCredentials{ID: tc.client.ID, Secret: "s3cret"},
					RefreshToken: rt, Scope: strings.Fields(scope)})
			}
			r2, err := refresh(resp.RefreshToken, "")
			if err != nil {
				t.Fatal(err)
			}
			if scopeOf(r2) != tc.want {
				t.Fatalf("refreshed scope %q, want %q", scopeOf(r2), tc.want)
			}
			u := e.dir.users["u1"]
			u.Roles = []string{"editor", "viewer"}
			e.dir.users["u1"] = u
			r3, err := refresh(r2.RefreshToken, "")
			if err != nil {
				t.Fatal(err)
			}
			if scopeOf(r3) != tc.wantLater {
				t.Fatalf("refreshed scope after a new role %q, want %q", scopeOf(r3), tc.wantLater)
			}
			if tc.widenScope == "" {
				return
			}
			r4, err := refresh(r3.RefreshToken, tc.widenScope)
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != apierr.ErrInvalidScope.Code {
				t.Fatalf("a refresh naming %q: scope %q, error %v; want invalid_scope", tc.widenScope, scopeOf(r4), err)
			}
			// The refusal spent nothing: the same token refreshes (RFC 6749 §6).
			if _, err := refresh(r3.RefreshToken, ""); err != nil {
				t.Fatalf("the refresh token after a refused scope: %v", err)
			}
		})
	}
}

// TestTokenExchangeAuthTime: an exchanged login's auth_time is when the
// person authenticated (the handler's AuthTime), not the exchange: it is
// the id token's auth_time and the session's, capped at now (zero: now).
// So "end every session" covers it: a subject token whose authentication
// is at or before the user's cut-off is refused (400 invalid_request, RFC
// 8693 §2.2.2, audited login.failed) and leaves no live session, with or
// without a refresh token; one after the cut-off is honoured.
func TestTokenExchangeAuthTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client string
		// authTime and cutoff are offsets from now (cutoff 0: none).
		authTime, cutoff time.Duration
		zero             bool // no AuthTime from the handler
		want             time.Duration
		refused          bool
	}{
		{name: "ok/upstream_auth_time_kept", client: "xchgr", authTime: -50 * time.Minute, want: -50 * time.Minute},
		{name: "ok/future_capped_at_now", client: "xchgr", authTime: time.Hour, want: 0},
		{name: "ok/none_is_now", client: "xchgr", zero: true, want: 0},
		{name: "ok/after_the_cutoff", client: "xchgr", authTime: -50 * time.Minute, cutoff: -time.Hour, want: -50 * time.Minute},
		{name: "fail/before_the_cutoff", client: "xchgr", authTime: -50 * time.Minute, cutoff: -10 * time.Minute, refused: true},
		{name: "fail/before_the_cutoff_without_refresh_token", client: "xchg", authTime: -50 * time.Minute, cutoff: -10 * time.Minute, refused: true},
		{name: "fail/at_the_cutoff", client: "xchgr", authTime: -50 * time.Minute, cutoff: -50 * time.Minute, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "RS256")
			e.dir.clients["xchg"] = store.Client{ID: "xchg", SecretHash: HashSecret("s3cret"), Grants: []string{GrantTokenExchange}}
			e.dir.clients["xchgr"] = store.Client{ID: "xchgr", SecretHash: HashSecret("s3cret"), Grants: []string{GrantTokenExchange, GrantRefreshToken}}
			now := e.clock.Now()
			h := stubSubject{user: e.dir.users["u1"]}
			if !tc.zero {
				h.authTime = now.Add(tc.authTime)
			}
			e.svc.RegisterSubjectTokenType(TokenTypeIDToken, h)
			if tc.cutoff != 0 {
				if err := e.state.RevokeUserSessions(context.Background(), "u1", now.Add(tc.cutoff)); err != nil {
					t.Fatal(err)
				}
			}
			req, err := exchangeReq(t, tc.client, "good", TokenTypeIDToken, map[string]string{"scope": "openid"})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.svc.Exchange(context.Background(), req, RequestMeta{IP: "192.0.2.1"})
			live := 0
			for _, r := range e.state.fams {
				if !r.revoked {
					live++
				}
			}
			if tc.refused {
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Code != "invalid_request" || ae.Status != 400 || resp.AccessToken != "" {
					t.Fatalf("exchange of a sign-in before the cut-off: %v, token %t; want 400 invalid_request", err, resp.AccessToken != "")
				}
				if live != 0 {
					t.Fatalf("%d live sessions after a refused exchange", live)
				}
				last := e.audit.events[len(e.audit.events)-1]
				if last.Action != "login.failed" || last.Details["reason"] != "sessions_ended" || last.Details["method"] != "stub" || last.TargetID != "u1" {
					t.Fatalf("audit %+v, want login.failed (sessions_ended)", last)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			want := now.Add(tc.want).Unix()
			if got := decodeClaims[IDClaims](t, resp.IDToken).AuthTime; got != want {
				t.Fatalf("id token auth_time %d, want %d (%v from now)", got, want, tc.want)
			}
			if live != 1 || resp.RefreshToken == "" {
				t.Fatalf("%d live sessions, refresh token %t; want one", live, resp.RefreshToken != "")
			}
			for _, r := range e.state.fams {
				if r.fam.AuthTime.Unix() != want {
					t.Fatalf("session auth time %v, want %v", r.fam.AuthTime, now.Add(tc.want))
				}
			}
		})
	}
}
