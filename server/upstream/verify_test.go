package upstream_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

func providerFor(op *upstreamtest.Provider) *upstream.Provider {
	ps, _ := upstream.NewProviders(&upstream.Provider{ID: "test", Name: "Test", Issuer: op.Issuer, ClientID: op.ClientID})
	p, _ := ps.Get("test")
	return p
}

// TestVerifyIDTokenRefuses: every hostile token is refused with
// ErrInvalidToken, never accepted.
func TestVerifyIDTokenRefuses(t *testing.T) {
	op := upstreamtest.New(t)
	p := providerFor(op)
	v := upstream.NewVerifier(nil, nil)
	ctx := context.Background()
	good := upstreamtest.Token{Subject: "u1", Email: "u1@example.com", EmailVerified: upstreamtest.Bool(true), Nonce: "n-1"}
	c, err := v.VerifyIDToken(ctx, p, op.IDToken(t, good), "n-1")
	if err != nil || c.Subject != "u1" || !c.EmailVerified || c.Provider != "test" {
		t.Fatalf("good token: %+v, %v", c, err)
	}
	with := func(f func(*upstreamtest.Token)) upstreamtest.Token { tok := good; f(&tok); return tok }
	for _, tc := range []struct {
		name  string
		tok   upstreamtest.Token
		nonce string
	}{
		{"fail/wrong_iss", with(func(tk *upstreamtest.Token) { tk.Issuer = "https://evil.example" }), "n-1"},
		{"fail/wrong_aud", with(func(tk *upstreamtest.Token) { tk.Audience = []string{"someone-else"} }), "n-1"},
		{"fail/wrong_nonce", good, "n-2"},
		{"fail/nonce_missing", with(func(tk *upstreamtest.Token) { tk.Nonce = "" }), "n-1"},
		{"fail/expired", with(func(tk *upstreamtest.Token) {
			tk.IssuedAt, tk.Expiry = time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
		}), "n-1"},
		{"fail/alg_none", with(func(tk *upstreamtest.Token) { tk.Alg = "none" }), "n-1"},
		{"fail/alg_hs256_with_client_secret", with(func(tk *upstreamtest.Token) { tk.Alg = "HS256" }), "n-1"},
		{"fail/key_not_in_jwks", with(func(tk *upstreamtest.Token) { tk.UnknownKey = true }), "n-1"},
		{"fail/azp_of_another_client", with(func(tk *upstreamtest.Token) {
			tk.Audience, tk.AZP = []string{op.ClientID, "other"}, "other"
		}), "n-1"},
		{"fail/several_audiences_without_azp", with(func(tk *upstreamtest.Token) {
			tk.Audience = []string{"another-app", op.ClientID}
		}), "n-1"},
		{"fail/access_token_typ", with(func(tk *upstreamtest.Token) { tk.Typ = "at+jwt" }), "n-1"},
		{"fail/no_sub", with(func(tk *upstreamtest.Token) { tk.Subject = "" }), "n-1"},
		{"fail/no_iat", with(func(tk *upstreamtest.Token) { tk.Extra = map[string]any{"iat": nil} }), "n-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.VerifyIDToken(ctx, p, op.IDToken(t, tc.tok), tc.nonce)
			if !errors.Is(err, upstream.ErrInvalidToken) {
				t.Fatalf("VerifyIDToken = %v, want ErrInvalidToken", err)
			}
		})
	}
	t.Run("fail/garbage", func(t *testing.T) {
		if _, err := v.VerifyIDToken(ctx, p, "not.a.jwt", ""); !errors.Is(err, upstream.ErrInvalidToken) {
			t.Fatalf("VerifyIDToken = %v", err)
		}
	})
	t.Run("ok/several_audiences_azp_ours", func(t *testing.T) {
		tok := with(func(tk *upstreamtest.Token) { tk.Audience, tk.AZP = []string{"another-app", op.ClientID}, op.ClientID })
		if c, err := v.VerifyIDToken(ctx, p, op.IDToken(t, tok), "n-1"); err != nil || c.Subject != "u1" {
			t.Fatalf("several audiences, azp ours: %+v, %v", c, err)
		}
	})
	t.Run("ok/one_audience_azp_ours", func(t *testing.T) {
		tok := with(func(tk *upstreamtest.Token) { tk.AZP = op.ClientID })
		if _, err := v.VerifyIDToken(ctx, p, op.IDToken(t, tok), "n-1"); err != nil {
			t.Fatalf("one audience, azp ours: %v", err)
		}
	})
	t.Run("ok/email_verified_forms", func(t *testing.T) {
		for _, tc := range []struct {
			raw  any
			want bool
		}{{true, true}, {"true", true}, {false, false}, {"false", false}, {1, false}, {nil, false}} {
			tok := with(func(tk *upstreamtest.Token) { tk.EmailVerified, tk.EmailVerifiedRaw = nil, tc.raw })
			c, err := v.VerifyIDToken(ctx, p, op.IDToken(t, tok), "n-1")
			if err != nil || c.EmailVerified != tc.want {
				t.Fatalf("email_verified %v: %+v, %v; want %v", tc.raw, c, err, tc.want)
			}
		}
	})
}

// TestVerifierAlgorithmsFromDiscovery: an algorithm the provider does not
// publish is refused even with a valid signature.
func TestVerifierAlgorithmsFromDiscovery(t *testing.T) {
	op := upstreamtest.New(t)
	op.SetDiscovery(map[string]any{"id_token_signing_alg_values_supported": []string{"ES256"}})
	v := upstream.NewVerifier(nil, nil)
	_, err := v.VerifyIDToken(context.Background(), providerFor(op), op.IDToken(t, upstreamtest.Token{Subject: "u1"}), "")
	if !errors.Is(err, upstream.ErrInvalidToken) {
		t.Fatalf("RS256 token from an ES256-only provider: %v", err)
	}
}

// TestVerifierDiscoveryIssuerMismatch: a discovery document naming another
// issuer is refused (the provider is treated as unreachable: fail closed).
func TestVerifierDiscoveryIssuerMismatch(t *testing.T) {
	op := upstreamtest.New(t)
	op.SetDiscovery(map[string]any{"issuer": "https://evil.example"})
	v := upstream.NewVerifier(nil, nil)
	_, err := v.VerifyIDToken(context.Background(), providerFor(op), op.IDToken(t, upstreamtest.Token{Subject: "u1"}), "")
	if !errors.Is(err, upstream.ErrUnavailable) {
		t.Fatalf("VerifyIDToken = %v, want ErrUnavailable", err)
	}
}

// memOnce is an in-memory store.SingleUse.
type memOnce struct {
	mu   sync.Mutex
	recs map[string]*onceRec
}

type onceRec struct {
	val   []byte
	exp   time.Time
	taken bool
}

func (m *memOnce) PutOnce(_ context.Context, kind string, key, val []byte, exp time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs == nil {
		m.recs = map[string]*onceRec{}
	}
	k := kind + string(key)
	if _, ok := m.recs[k]; ok {
		return store.ErrAlreadyExists
	}
	m.recs[k] = &onceRec{val: val, exp: exp}
	return nil
}

func (m *memOnce) TakeOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[kind+string(key)]
	switch {
	case !ok || now.After(r.exp):
		return nil, store.ErrNotFound
	case r.taken:
		return r.val, store.ErrTokenUsed
	}
	r.taken = true
	return r.val, nil
}

func (m *memOnce) PeekOnce(context.Context, string, []byte, time.Time) ([]byte, error) {
	return nil, store.ErrNotFound
}

type memStore struct {
	directory
}

func (m *memStore) LinkFederatedIdentity(_ context.Context, fi *store.FederatedIdentity) error {
	if _, err := m.GetFederatedIdentity(context.Background(), fi.Provider, fi.Issuer, fi.Subject); err == nil {
		return store.ErrAlreadyExists
	}
	m.links = append(m.links, *fi)
	return nil
}

type noAccounts struct{}

func (noAccounts) CreateFederatedUser(context.Context, accounts.Meta, accounts.FederatedUser) (store.User, error) {
	return store.User{}, errors.New("not in this test")
}

func (noAccounts) PendingInvite(context.Context, accounts.Meta, accounts.InviteRef) (store.Invite, error) {
	return store.Invite{}, errors.New("not in this test")
}

func (noAccounts) AcceptInviteFederated(context.Context, accounts.Meta, accounts.InviteRef, accounts.FederatedUser) (store.User, error) {
	return store.User{}, errors.New("not in this test")
}

type auditLog struct {
	mu     sync.Mutex
	events []store.AuditEvent
}

func (a *auditLog) Record(_ context.Context, e store.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *auditLog) last() store.AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.events) == 0 {
		return store.AuditEvent{}
	}
	return a.events[len(a.events)-1]
}

// browse follows Begin's URL at the provider and returns the callback query.
func browse(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := noRedirectClient()
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != 303 {
		t.Fatalf("authorize answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestBrowserPath runs Begin and Callback against the test provider: a
// good sign-in verifies (email from userinfo when the id token has none),
// and a replayed callback, an unknown state, a state begun for another
// provider, a wrong nonce and userinfo about another sub are refused and
// audited.
func TestBrowserPath(t *testing.T) {
	op := upstreamtest.New(t)
	op2 := upstreamtest.New(t)
	ps, err := upstream.NewProviders(
		&upstream.Provider{ID: "test", Name: "Test", Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: secretOf(t, op)},
		&upstream.Provider{ID: "other", Name: "Other", Issuer: op2.Issuer, ClientID: op2.ClientID, ClientSecret: secretOf(t, op2)})
	if err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	ann := store.User{ID: "usr_ann", Email: "ann@example.com", Active: true, EmailVerified: true}
	st := &memStore{directory{users: []store.User{ann}, links: []store.FederatedIdentity{{Provider: "test", Issuer: op.Issuer, Subject: "s-ann", UserID: ann.ID}}}}
	svc, err := upstream.New(upstream.Deps{Providers: ps, Verifier: upstream.NewVerifier(nil, nil), Store: st, Accounts: noAccounts{},
		Audit: audit, Once: &memOnce{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := upstream.Meta{IP: "192.0.2.1", ClientID: "portcullis"}
	cb := "http://127.0.0.1:1/login/test/callback"
	refused := func(t *testing.T, err error, reason string) {
		t.Helper()
		var r *upstream.Refusal
		if !errors.As(err, &r) || r.Reason != reason {
			t.Fatalf("Callback = %v, want refusal %s", err, reason)
		}
		e := audit.last()
		if e.Action != "login.failed" || e.Details["method"] != "upstream" || e.Details["reason"] != reason {
			t.Fatalf("audit = %+v, want login.failed upstream %s", e, reason)
		}
	}

	op.NextLogin(upstreamtest.Token{Subject: "s-ann", Email: "ann@example.com", EmailVerified: upstreamtest.Bool(true)})
	u, err := svc.Begin(ctx, "test", cb, upstream.Freshness{}, []byte("authreq-1"))
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if q, _ := url.Parse(u); q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("nonce") == "" || q.Query().Get("state") == "" {
		t.Fatalf("authorization URL lacks PKCE, nonce or state: %s", u)
	}
	q := browse(t, u)
	v, err := svc.Callback(ctx, "test", q, m)
	if err != nil || v.Claims.Subject != "s-ann" || string(v.Return) != "authreq-1" {
		t.Fatalf("Callback = %+v, %v", v, err)
	}
	d, err := svc.Decide(ctx, upstream.Input{Provider: v.Provider, Claims: v.Claims})
	if err != nil || d.Outcome != upstream.OutcomeLogin || d.User.ID != ann.ID {
		t.Fatalf("Decide = %+v, %v", d, err)
	}

	t.Run("fail/replayed_callback", func(t *testing.T) {
		_, err := svc.Callback(ctx, "test", q, m)
		refused(t, err, upstream.ReasonReplayedCallback)
	})
	t.Run("fail/unknown_state", func(t *testing.T) {
		bad := url.Values{"state": {"made-up"}, "code": {"x"}}
		_, err := svc.Callback(ctx, "test", bad, m)
		refused(t, err, upstream.ReasonInvalidState)
	})
	t.Run("fail/state_of_another_provider", func(t *testing.T) {
		op2.NextLogin(upstreamtest.Token{Subject: "x"})
		u, err := svc.Begin(ctx, "other", cb, upstream.Freshness{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		q := browse(t, u)
		_, err = svc.Callback(ctx, "test", q, m)
		refused(t, err, upstream.ReasonInvalidState)
	})
	t.Run("fail/iss_of_another_issuer", func(t *testing.T) {
		op.NextLogin(upstreamtest.Token{Subject: "s-ann"})
		u, _ := svc.Begin(ctx, "test", cb, upstream.Freshness{}, nil)
		q := browse(t, u)
		q.Set("iss", "https://evil.example")
		_, err := svc.Callback(ctx, "test", q, m)
		refused(t, err, upstream.ReasonInvalidState)
	})
	t.Run("fail/wrong_nonce", func(t *testing.T) {
		op.NextLogin(upstreamtest.Token{Subject: "s-ann", Nonce: "not-the-one-sent"})
		u, _ := svc.Begin(ctx, "test", cb, upstream.Freshness{}, nil)
		_, err := svc.Callback(ctx, "test", browse(t, u), m)
		refused(t, err, upstream.ReasonInvalidToken)
	})
	t.Run("fail/provider_error", func(t *testing.T) {
		op.NextLogin(upstreamtest.Token{Subject: "s-ann"})
		u, _ := svc.Begin(ctx, "test", cb, upstream.Freshness{}, nil)
		q := browse(t, u)
		q.Del("code")
		q.Set("error", "access_denied")
		_, err := svc.Callback(ctx, "test", q, m)
		refused(t, err, upstream.ReasonUpstreamError)
	})
	t.Run("ok/email_from_userinfo", func(t *testing.T) {
		op.NextLogin(upstreamtest.Token{Subject: "s-new"})
		op.SetUserInfo(map[string]any{"sub": "s-new", "email": "new@example.com", "email_verified": true})
		defer op.SetUserInfo(nil)
		u, _ := svc.Begin(ctx, "test", cb, upstream.Freshness{}, nil)
		v, err := svc.Callback(ctx, "test", browse(t, u), m)
		if err != nil || v.Claims.Email != "new@example.com" || !v.Claims.EmailVerified {
			t.Fatalf("Callback = %+v, %v", v.Claims, err)
		}
	})
	t.Run("fail/userinfo_about_another_sub", func(t *testing.T) {
		op.NextLogin(upstreamtest.Token{Subject: "s-new"})
		op.SetUserInfo(map[string]any{"sub": "s-ann", "email": "ann@example.com", "email_verified": true})
		defer op.SetUserInfo(nil)
		u, _ := svc.Begin(ctx, "test", cb, upstream.Freshness{}, nil)
		_, err := svc.Callback(ctx, "test", browse(t, u), m)
		refused(t, err, upstream.ReasonInvalidToken)
	})
	t.Run("fresh_login", func(t *testing.T) {
		now := time.Now()
		asked := upstream.Freshness{Since: now.Add(-time.Second).Truncate(time.Second)}
		withMaxAge := upstream.Freshness{MaxAge: 10 * time.Minute, HasMaxAge: true}
		// signedIn is the sign-in's time (Verified.SignedInAt, within 2 s):
		// the provider's, moved up to what the request asked when the
		// provider's clock is behind ours (within the 30 s leeway).
		for _, tc := range []struct {
			name     string
			fresh    upstream.Freshness
			authTime any // the id token's auth_time; nil: none
			refused  bool
			signedIn time.Time
		}{
			{"ok/prompt_login_shown", asked, now.Unix(), false, now},
			{"ok/max_age_shown", withMaxAge, now.Add(-9 * time.Minute).Unix(), false, now.Add(-9 * time.Minute)},
			{"ok/nothing_asked_nothing_checked", upstream.Freshness{}, now.Add(-48 * time.Hour).Unix(), false, now.Add(-48 * time.Hour)},
			{"ok/prompt_login_provider_clock_behind", asked, now.Add(-20 * time.Second).Unix(), false, asked.Since},
			{"ok/max_age_provider_clock_behind", withMaxAge, now.Add(-615 * time.Second).Unix(), false, now.Add(-10 * time.Minute)},
			{"ok/nothing_asked_sign_in_within_max_login_age", upstream.Freshness{}, now.Add(-store.MaxLoginAge + time.Hour).Unix(), false,
				now.Add(-store.MaxLoginAge + time.Hour)},
			{"fail/nothing_asked_sign_in_older_than_max_login_age", upstream.Freshness{}, now.Add(-store.MaxLoginAge - time.Hour).Unix(), true, time.Time{}},
			{"fail/prompt_login_provider_kept_its_session", asked, now.Add(-time.Hour).Unix(), true, time.Time{}},
			{"fail/max_age_provider_kept_its_session", withMaxAge, now.Add(-time.Hour).Unix(), true, time.Time{}},
			{"fail/prompt_login_no_auth_time", asked, nil, true, time.Time{}},
			{"fail/max_age_no_auth_time", withMaxAge, nil, true, time.Time{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tok := upstreamtest.Token{Subject: "s-ann"}
				if tc.authTime != nil {
					tok.Extra = map[string]any{"auth_time": tc.authTime}
				}
				op.NextLogin(tok)
				u, err := svc.Begin(ctx, "test", cb, tc.fresh, nil)
				if err != nil {
					t.Fatal(err)
				}
				q, _ := url.Parse(u)
				// max_age is always sent, so that auth_time comes back: the
				// request's, else a year's (no provider session renewed).
				wantPrompt, wantMaxAge := "", "31536000"
				if !tc.fresh.Since.IsZero() {
					wantPrompt = "login"
				}
				if tc.fresh.HasMaxAge {
					wantMaxAge = "600"
				}
				if q.Query().Get("prompt") != wantPrompt || q.Query().Get("max_age") != wantMaxAge {
					t.Fatalf("authorization URL passes on prompt %q and max_age %q, want %q and %q", q.Query().Get("prompt"),
						q.Query().Get("max_age"), wantPrompt, wantMaxAge)
				}
				v, err := svc.Callback(ctx, "test", browse(t, u), m)
				if tc.refused {
					refused(t, err, upstream.ReasonStaleLogin)
					return
				}
				if err != nil || v.Claims.Subject != "s-ann" {
					t.Fatalf("Callback = %+v, %v", v.Claims, err)
				}
				if d := v.SignedInAt.Sub(tc.signedIn); d < -2*time.Second || d > 2*time.Second {
					t.Fatalf("SignedInAt = %v, want %v", v.SignedInAt, tc.signedIn)
				}
			})
		}
	})
	t.Run("fail/unknown_provider_begin", func(t *testing.T) {
		if _, err := svc.Begin(ctx, "nope", cb, upstream.Freshness{}, nil); err == nil || !strings.Contains(err.Error(), "not_found") {
			t.Fatalf("Begin(unknown) = %v, want 404", err)
		}
	})
	t.Run("ok/link_confirmed_rechecks", func(t *testing.T) {
		eve := store.User{ID: "usr_eve", Email: "eve@example.com", Active: true, EmailVerified: true}
		st.users = append(st.users, eve)
		c := upstream.Claims{Provider: "test", Subject: "s-eve", Email: "eve@example.com", EmailVerified: true}
		p, _ := ps.Get("test")
		if _, err := svc.LinkConfirmed(ctx, p, c, ann.ID, m); err == nil {
			t.Fatal("LinkConfirmed linked the identity to a user the core did not name")
		}
		got, err := svc.LinkConfirmed(ctx, p, c, eve.ID, m)
		if err != nil || got.ID != eve.ID {
			t.Fatalf("LinkConfirmed = %+v, %v", got, err)
		}
		if e := audit.last(); e.Action != "identity.linked" || e.Details["via"] != "confirm" || e.TargetID != eve.ID {
			t.Fatalf("audit = %+v", e)
		}
		if _, err := svc.LinkConfirmed(ctx, p, c, eve.ID, m); err == nil {
			t.Fatal("LinkConfirmed linked twice")
		}
	})
}

// TestLoginTime: a verified id token's sign-in time is its auth_time, else
// its iat (kept by VerifyIDToken), at the end of the whole second it names,
// never after now.
func TestLoginTime(t *testing.T) {
	op := upstreamtest.New(t)
	p := providerFor(op)
	v := upstream.NewVerifier(nil, nil)
	now := time.Now().Truncate(time.Second)
	old, older := now.Add(-50*time.Minute), now.Add(-2*time.Hour)
	const last = time.Second - time.Millisecond // the named second's last millisecond
	for _, tc := range []struct {
		name     string
		iat      time.Time
		authTime *time.Time
		want     time.Time
	}{
		{"ok/auth_time", old, &older, older.Add(last)},
		{"ok/iat_without_auth_time", old, nil, old.Add(last)},
		{"ok/auth_time_this_second", old, &now, now},
		{"ok/future_auth_time_capped_at_now", old, new(now.Add(time.Hour)), now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := upstreamtest.Token{Subject: "u1", IssuedAt: tc.iat, Expiry: now.Add(5 * time.Minute)}
			if tc.authTime != nil {
				tok.Extra = map[string]any{"auth_time": tc.authTime.Unix()}
			}
			c, err := v.VerifyIDToken(context.Background(), p, op.IDToken(t, tok), "")
			if err != nil {
				t.Fatal(err)
			}
			if got := c.LoginTime(now); !got.Equal(tc.want) {
				t.Fatalf("LoginTime = %v, want %v", got, tc.want)
			}
		})
	}
}
