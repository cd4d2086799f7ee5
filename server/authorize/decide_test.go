package authorize

import (
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// TestDecide is the contract's table "situation at /authorize", each row
// interactive and with prompt=none.
func TestDecide(t *testing.T) {
	received := testNow
	now := received.Add(time.Second)
	live := func(authAgo time.Duration) *store.BrowserSession {
		return &store.BrowserSession{ID: "bs1", UserID: "u1", AuthTime: received.Add(-authAgo), AMR: []string{"pwd"}}
	}
	active := UserState{Exists: true, Active: true}
	consent := func(grantedAgo time.Duration, scopes ...string) *store.Consent {
		return &store.Consent{UserID: "u1", ClientID: "tp", Scopes: scopes, GrantedAt: received.Add(-grantedAgo)}
	}
	base := func() *Request {
		return &Request{ClientID: "tp", RedirectURI: "https://app.example/cb", ResponseMode: ModeQuery, Scopes: []string{"openid", "docs:read"},
			State: "st", Issuer: issuer, ReceivedAt: received}
	}
	cases := []struct {
		name     string
		req      func(r *Request, c *store.Client)
		in       Inputs
		want     Action
		reason   string
		noneCode string // the prompt=none answer; "" = a code
	}{
		{name: "no session", in: Inputs{}, want: ShowLogin, reason: ReasonNoSession, noneCode: ErrLoginRequired},
		{name: "session of a deactivated user", in: Inputs{Session: live(time.Hour), User: UserState{Exists: true}}, want: ShowLogin, reason: ReasonNoSession, noneCode: ErrLoginRequired},
		{name: "session of a deleted user", in: Inputs{Session: live(time.Hour)}, want: ShowLogin, reason: ReasonNoSession, noneCode: ErrLoginRequired},
		{name: "prompt=login with an older login", req: func(r *Request, c *store.Client) { r.Prompt.Login = true },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ShowLogin, reason: ReasonReauthenticate, noneCode: ErrLoginRequired},
		{name: "prompt=login satisfied by a login after the request", req: func(r *Request, c *store.Client) { r.Prompt.Login = true; c.FirstParty = true },
			in: Inputs{Session: live(-time.Millisecond), User: active, SignedInDuring: true}, want: ActIssueCode},
		{name: "max_age exceeded", req: func(r *Request, c *store.Client) { r.HasMaxAge, r.MaxAge = true, time.Second; c.FirstParty = true },
			in: Inputs{Session: live(2 * time.Second), User: active}, want: ShowLogin, reason: ReasonReauthenticate, noneCode: ErrLoginRequired},
		{name: "max_age=0 forces a login", req: func(r *Request, c *store.Client) { r.HasMaxAge = true; c.FirstParty = true },
			in: Inputs{Session: live(time.Millisecond), User: active}, want: ShowLogin, reason: ReasonReauthenticate, noneCode: ErrLoginRequired},
		{name: "max_age not exceeded (SSO)", req: func(r *Request, c *store.Client) {
			r.HasMaxAge, r.MaxAge = true, 10000*time.Second
			c.FirstParty = true
		},
			in: Inputs{Session: live(time.Hour), User: active}, want: ActIssueCode},
		{name: "prompt=login satisfied by a login stored at second precision", req: func(r *Request, c *store.Client) {
			r.Prompt.Login = true
			c.FirstParty = true
			r.ReceivedAt = received.Add(700 * time.Millisecond)
		},
			in: Inputs{Session: live(0), User: active, SignedInDuring: true}, want: ActIssueCode},
		{name: "prompt=login with a login in the request's own second, before it", req: func(r *Request, c *store.Client) { r.Prompt.Login = true; c.FirstParty = true },
			in: Inputs{Session: live(50 * time.Millisecond), User: active}, want: ShowLogin, reason: ReasonReauthenticate, noneCode: ErrLoginRequired},
		{name: "max_age satisfied by a login after the request", req: func(r *Request, c *store.Client) { r.HasMaxAge = true; c.FirstParty = true },
			in: Inputs{Session: live(0), User: active, SignedInDuring: true}, want: ActIssueCode},
		{name: "id_token_hint names another user", req: func(r *Request, c *store.Client) { r.HintSubject = "u2"; c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: active}, want: ShowLogin, reason: ReasonHintMismatch, noneCode: ErrLoginRequired},
		{name: "id_token_hint names the session's user", req: func(r *Request, c *store.Client) { r.HintSubject = "u1"; c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: active}, want: ActIssueCode},
		{name: "must change password", req: func(r *Request, c *store.Client) { c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: UserState{Exists: true, Active: true, MustChangePassword: true}}, want: ShowChangePassword, noneCode: ErrInteractionRequired},
		{name: "session lacking the second factor the code's roles need", req: func(r *Request, c *store.Client) { c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: active, SecondFactorOwed: true}, want: ShowLogin, reason: ReasonSecondFactor, noneCode: ErrLoginRequired},
		{name: "session lacking the second factor, signed in during the request", req: func(r *Request, c *store.Client) { c.FirstParty = true },
			in: Inputs{Session: live(-time.Millisecond), User: active, SignedInDuring: true, SecondFactorOwed: true}, want: ShowLogin, reason: ReasonSecondFactor, noneCode: ErrLoginRequired},
		{name: "must change password before the second factor", req: func(r *Request, c *store.Client) { c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: UserState{Exists: true, Active: true, MustChangePassword: true}, SecondFactorOwed: true}, want: ShowChangePassword, noneCode: ErrInteractionRequired},
		{name: "select_account", req: func(r *Request, c *store.Client) { r.Prompt.SelectAccount = true; c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: active}, want: SelectAccount, noneCode: ErrAccountSelectionRequired},
		{name: "select_account without a session: login", req: func(r *Request, c *store.Client) { r.Prompt.SelectAccount = true },
			in: Inputs{}, want: ShowLogin, reason: ReasonNoSession, noneCode: ErrLoginRequired},
		{name: "select_account answered", req: func(r *Request, c *store.Client) { r.Prompt.SelectAccount = true; c.FirstParty = true },
			in: Inputs{Session: live(time.Hour), User: active, AccountSelected: true}, want: ActIssueCode},
		{name: "third-party without consent", in: Inputs{Session: live(time.Hour), User: active}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "third-party, consent not covering the scopes", in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "openid")},
			want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "third-party, remembered consent covers", in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid", "email")},
			want: ActIssueCode},
		{name: "third-party, prompt=consent with remembered consent", req: func(r *Request, c *store.Client) { r.Prompt.Consent = true },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "third-party, prompt=consent answered for this request", req: func(r *Request, c *store.Client) { r.Prompt.Consent = true },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(-time.Millisecond, "docs:read", "openid"), ConsentGiven: true}, want: ActIssueCode},
		{name: "third-party, prompt=consent: a consent given after the request, for another one, does not count",
			req: func(r *Request, c *store.Client) { r.Prompt.Consent = true },
			in:  Inputs{Session: live(time.Hour), User: active, Consent: consent(-time.Millisecond, "docs:read", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "third-party, offline_access always asks", req: func(r *Request, c *store.Client) { r.Scopes = append(r.Scopes, "offline_access") },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "offline_access", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "public client with a private-use scheme: remembered consent not reused", req: func(r *Request, c *store.Client) { c.Public, r.RedirectURI = true, "com.example.app:/cb" },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "public client with a loopback redirect on any port: remembered consent not reused (found by a review)",
			req: func(r *Request, c *store.Client) { c.Public, r.RedirectURI = true, "http://127.0.0.1:50000/cb" },
			in:  Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "public client with an IPv6 loopback redirect: remembered consent not reused", req: func(r *Request, c *store.Client) { c.Public, r.RedirectURI = true, "http://[::1]/cb" },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ShowConsent, noneCode: ErrConsentRequired},
		{name: "public client with a loopback redirect, consent given for this request", req: func(r *Request, c *store.Client) { c.Public, r.RedirectURI = true, "http://127.0.0.1:6666/cb" },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(-time.Millisecond, "docs:read", "openid"), ConsentGiven: true}, want: ActIssueCode},
		{name: "public client with an https redirect: remembered consent reused", req: func(r *Request, c *store.Client) { c.Public = true },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ActIssueCode},
		{name: "confidential client with a loopback redirect: remembered consent reused", req: func(r *Request, c *store.Client) { r.RedirectURI = "http://127.0.0.1:6666/cb" },
			in: Inputs{Session: live(time.Hour), User: active, Consent: consent(time.Hour, "docs:read", "openid")}, want: ActIssueCode},
		{name: "first-party public client with a loopback redirect: no consent (the contract)",
			req: func(r *Request, c *store.Client) {
				c.FirstParty, c.Public, r.RedirectURI = true, true, "http://127.0.0.1:6666/cb"
			},
			in: Inputs{Session: live(time.Hour), User: active}, want: ActIssueCode},
		{name: "first-party never shows consent", req: func(r *Request, c *store.Client) {
			c.FirstParty = true
			r.Prompt.Consent = true
			r.Scopes = append(r.Scopes, "offline_access")
		},
			in: Inputs{Session: live(time.Hour), User: active}, want: ActIssueCode},
		{name: "prompt=none with select_account (not produced by ParseRequest)", req: func(r *Request, c *store.Client) {
			r.Prompt = Prompt{None: true, SelectAccount: true}
			c.FirstParty = true
		},
			in: Inputs{Session: live(time.Hour), User: active}, want: Refuse},
		{name: "login wins over consent", in: Inputs{User: active}, want: ShowLogin, reason: ReasonNoSession, noneCode: ErrLoginRequired},
	}
	for _, tc := range cases {
		probe := base()
		if tc.req != nil {
			tc.req(probe, &store.Client{})
		}
		variants := []bool{false}
		if probe.Prompt == (Prompt{}) {
			variants = append(variants, true) // prompt=none stands alone
		}
		for _, none := range variants {
			name := tc.name
			if none {
				name += "/prompt=none"
			}
			t.Run(name, func(t *testing.T) {
				r, in := base(), tc.in
				if tc.req != nil {
					tc.req(r, &in.Client)
				}
				if none {
					r.Prompt.None = true
				}
				d := Decide(r, in, now)
				if tc.want == Refuse {
					if d.Action != Refuse || d.Error.Code != ErrAccountSelectionRequired {
						t.Fatalf("%v %+v", d.Action, d.Error)
					}
					return
				}
				if !none {
					if d.Action != tc.want || d.Reason != tc.reason || d.Error != nil {
						t.Fatalf("decision %v %q %v, want %v %q", d.Action, d.Reason, d.Error, tc.want, tc.reason)
					}
					return
				}
				if tc.noneCode == "" || tc.want == ActIssueCode {
					if d.Action != ActIssueCode {
						t.Fatalf("prompt=none: %v %v, want a code", d.Action, d.Error)
					}
					return
				}
				if d.Action != Refuse || d.Error == nil || d.Error.Code != tc.noneCode || d.Error.State != "st" || d.Error.Issuer != issuer {
					t.Fatalf("prompt=none: %v %+v, want %s", d.Action, d.Error, tc.noneCode)
				}
			})
		}
	}
}

func TestStateOf(t *testing.T) {
	if StateOf(nil) != (UserState{}) {
		t.Fatal("nil user")
	}
	if got := StateOf(&store.User{Active: true, MustChangePassword: true}); got != (UserState{Exists: true, Active: true, MustChangePassword: true}) {
		t.Fatalf("%+v", got)
	}
}

// TestSignedInDuring: a login time kept to the second (a provider's
// auth_time) counts as made during a request from the start of the second
// the request arrived in (no endless login loop); a finer one only at or
// after the arrival, so a session begun a moment before the request in
// its second never counts (found by a review: every login in the
// request's second counted). The flow asks it only of a request kept for
// a page (Inputs.SignedInDuring).
func TestSignedInDuring(t *testing.T) {
	arrived := time.Date(2026, 12, 5, 3, 0, 10, 300*int(time.Millisecond), time.UTC)
	r := &Request{ReceivedAt: arrived}
	for _, tc := range []struct {
		name string
		auth time.Time
		want bool
	}{
		{"fail/the_second_before", arrived.Truncate(time.Second).Add(-time.Millisecond), false},
		{"fail/an_hour_before", arrived.Add(-time.Hour), false},
		{"ok/the_same_second_kept_in_whole_seconds", arrived.Truncate(time.Second), true},
		{"fail/the_same_second_before_arrival", arrived.Add(-100 * time.Millisecond), false},
		{"fail/a_millisecond_before_arrival", arrived.Add(-time.Millisecond), false},
		{"ok/at_arrival", arrived, true},
		{"ok/after_arrival", arrived.Add(time.Millisecond), true},
		{"ok/a_later_second_kept_in_whole_seconds", arrived.Truncate(time.Second).Add(time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.SignedInDuring(tc.auth); got != tc.want {
				t.Fatalf("SignedInDuring(%v) of a request at %v = %v, want %v", tc.auth, arrived, got, tc.want)
			}
		})
	}
}
