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

// boundSubject is a SubjectTokenHandler of a credential that is not a login.
type boundSubject struct {
	user  store.User
	bound BoundIssuance
}

func (h boundSubject) ExchangeSubjectToken(context.Context, store.Client, string, RequestMeta) (ExchangedSubject, error) {
	b := h.bound
	return ExchangedSubject{User: h.user, Bound: &b}, nil
}

func payloadOf(t *testing.T, jwt string) AccessClaims {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c AccessClaims
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTokenExchangeBoundIssuance: a bound subject gets one access token and
// nothing else (no refresh token, no id token even with openid, no roles,
// no login recorded), with the credential's sid, a lifetime capped by
// MaxTTL and NotAfter, and permissions narrowed by the request and by the
// client's scopes; revoking the sid makes it inactive at introspection.
func TestTokenExchangeBoundIssuance(t *testing.T) {
	e := newCodeEnv(t, "ES256")
	grants := []string{GrantTokenExchange, GrantRefreshToken}
	e.dir.clients["xchg"] = store.Client{ID: "xchg", SecretHash: HashSecret("s3cret"), Grants: grants, Audiences: []string{"https://api.example"}}
	e.dir.clients["narrow"] = store.Client{ID: "narrow", SecretHash: HashSecret("s3cret"), Grants: grants, Scopes: []string{"docs:read"}}
	u1 := e.dir.users["u1"]
	now := e.clock.Now()
	ctx := context.Background()
	e.svc.RegisterSubjectTokenType(TokenTypeAPIKey, boundSubject{user: u1, bound: BoundIssuance{SID: "ak_apk_1",
		Permissions: []string{"docs:read", "docs:write"}, MaxTTL: 15 * time.Minute, NotAfter: now.Add(24 * time.Hour)}})
	e.svc.RegisterSubjectTokenType("urn:test:soon", boundSubject{user: u1, bound: BoundIssuance{SID: "ak_apk_2",
		Permissions: []string{"docs:read"}, MaxTTL: 15 * time.Minute, NotAfter: now.Add(90*time.Second + 500*time.Millisecond)}})
	e.svc.RegisterSubjectTokenType("urn:test:gone", boundSubject{user: u1, bound: BoundIssuance{SID: "ak_apk_3",
		Permissions: []string{"docs:read"}, NotAfter: now.Add(500 * time.Millisecond)}})
	e.svc.RegisterSubjectTokenType("urn:test:inactive", boundSubject{user: e.dir.users["u2"], bound: BoundIssuance{SID: "ak_apk_4"}})

	tests := []struct {
		name, client, typ, scope string
		wantScope                string
		wantTTL                  int64
		wantAud                  Audience
		code                     string
	}{
		{name: "ok/effective_scope", client: "xchg", typ: TokenTypeAPIKey, wantScope: "docs:read docs:write", wantTTL: 900, wantAud: Audience{"https://api.example"}},
		{name: "ok/openid_ignored", client: "xchg", typ: TokenTypeAPIKey, scope: "openid offline_access", wantScope: "docs:read docs:write", wantTTL: 900, wantAud: Audience{"https://api.example"}},
		{name: "ok/narrowed_by_the_request", client: "xchg", typ: TokenTypeAPIKey, scope: "docs:write admin:all", wantScope: "docs:write", wantTTL: 900, wantAud: Audience{"https://api.example"}},
		{name: "ok/narrowed_by_the_client", client: "narrow", typ: TokenTypeAPIKey, wantScope: "docs:read", wantTTL: 900, wantAud: Audience{"api"}},
		{name: "ok/never_past_the_key", client: "xchg", typ: "urn:test:soon", wantScope: "docs:read", wantTTL: 90, wantAud: Audience{"https://api.example"}},
		{name: "fail/key_expires_now", client: "xchg", typ: "urn:test:gone", code: "invalid_request"},
		{name: "fail/owner_deactivated", client: "xchg", typ: "urn:test:inactive", code: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.audit.actions())
			extra := map[string]string{}
			if tc.scope != "" {
				extra["scope"] = tc.scope
			}
			req, err := exchangeReq(t, tc.client, "pcak_whatever", tc.typ, extra)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.svc.Exchange(ctx, req, RequestMeta{})
			if tc.code != "" {
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Code != tc.code {
					t.Fatalf("Exchange = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if resp.RefreshToken != "" || resp.IDToken != "" || resp.IssuedTokenType != TokenTypeAccessToken ||
				scopeOf(resp) != tc.wantScope || resp.ExpiresIn != tc.wantTTL {
				t.Fatalf("response %+v", resp)
			}
			c := payloadOf(t, resp.AccessToken)
			if c.SID == "" || !strings.HasPrefix(c.SID, "ak_apk_") || c.Subject != "u1" || c.ClientID != tc.client ||
				c.Roles == nil || len(c.Roles) != 0 || c.Scope != tc.wantScope || c.Expiry-c.IssuedAt != tc.wantTTL ||
				!slices.Equal(c.Audience, tc.wantAud) || len(c.AMR) != 0 || c.AuthTime != 0 {
				t.Fatalf("claims %+v", c)
			}
			if got := e.audit.actions()[before:]; len(got) != 0 {
				t.Fatalf("a bound issuance recorded %v, want no login event", got)
			}
		})
	}

	req, _ := exchangeReq(t, "xchg", "pcak_whatever", TokenTypeAPIKey, nil)
	resp, err := e.svc.Exchange(ctx, req, RequestMeta{})
	if err != nil {
		t.Fatal(err)
	}
	cred := ClientCredentials{ID: "xchg", Secret: "s3cret"}
	if out, err := e.svc.Introspect(ctx, cred, resp.AccessToken); err != nil || out["active"] != true || out["sid"] != "ak_apk_1" {
		t.Fatalf("introspection before revoking the sid = %v, %v", out, err)
	}
	if err := e.svc.EndGrants(ctx, []string{"ak_apk_1"}); err != nil {
		t.Fatal(err)
	}
	if out, err := e.svc.Introspect(ctx, cred, resp.AccessToken); err != nil || len(out) != 1 || out["active"] != false {
		t.Fatalf("introspection after revoking the sid = %v, %v", out, err)
	}
	if _, err := e.svc.AuthenticateBearer(ctx, resp.AccessToken); err == nil {
		t.Fatal("a token of a revoked sid authenticated")
	}
}

// stubKeys is an APIKeys that knows no key but records what it was asked.
type stubKeys struct {
	introspected, revoked []string
}

func (k *stubKeys) IntrospectAPIKey(_ context.Context, client store.Client, raw string) (map[string]any, error) {
	k.introspected = append(k.introspected, client.ID+" "+raw)
	return map[string]any{"active": true, "token_type": "api_key"}, nil
}

func (k *stubKeys) RevokeAPIKeyByValue(_ context.Context, raw string, _ RequestMeta) error {
	k.revoked = append(k.revoked, raw)
	return nil
}

// TestAPIKeysAtIntrospectionAndRevocation: a pcak_ token goes to the API
// keys (introspection after the client authenticated; revocation without
// any client), anything else does not; without API keys a key is inactive.
func TestAPIKeysAtIntrospectionAndRevocation(t *testing.T) {
	e := newCodeEnv(t, "ES256")
	ctx := context.Background()
	cred := ClientCredentials{ID: "web", Secret: "s3cret"}
	if out, err := e.svc.Introspect(ctx, cred, "pcak_x"); err != nil || len(out) != 1 || out["active"] != false {
		t.Fatalf("introspection without API keys = %v, %v", out, err)
	}
	if handled, err := e.svc.RevokeAPIKey(ctx, "pcak_x", RequestMeta{}); !handled || err != nil {
		t.Fatalf("RevokeAPIKey without API keys = %v, %v", handled, err)
	}
	k := &stubKeys{}
	e.svc.SetAPIKeys(k)
	if out, err := e.svc.Introspect(ctx, cred, "pcak_x"); err != nil || out["token_type"] != "api_key" {
		t.Fatalf("introspection = %v, %v", out, err)
	}
	if _, err := e.svc.Introspect(ctx, ClientCredentials{ID: "web", Secret: "wrong"}, "pcak_y"); err == nil {
		t.Fatal("introspection without client authentication")
	}
	for _, raw := range []string{"pcak_x", "pcrt_x", "eyJ.x.y", ""} {
		handled, err := e.svc.RevokeAPIKey(ctx, raw, RequestMeta{})
		if err != nil || handled != strings.HasPrefix(raw, "pcak_") {
			t.Fatalf("RevokeAPIKey(%q) = %v, %v", raw, handled, err)
		}
	}
	if !slices.Equal(k.introspected, []string{"web pcak_x"}) || !slices.Equal(k.revoked, []string{"pcak_x"}) {
		t.Fatalf("introspected %v revoked %v", k.introspected, k.revoked)
	}
}
