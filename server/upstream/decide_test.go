package upstream_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/store"
)

// directory is an in-memory upstream.Directory: an identity is (provider,
// issuer, subject), and the markers of links made before issuers were kept
// match nothing, as in the store.
type directory struct {
	users []store.User
	links []store.FederatedIdentity
	fail  error
}

func (d *directory) GetFederatedIdentity(_ context.Context, provider, issuer, subject string) (store.FederatedIdentity, error) {
	if d.fail != nil {
		return store.FederatedIdentity{}, d.fail
	}
	if issuer == store.IssuerUnresolved || issuer == store.IssuerUnknown {
		return store.FederatedIdentity{}, store.ErrNotFound
	}
	for _, l := range d.links {
		if l.Provider == provider && l.Issuer == issuer && l.Subject == subject {
			return l, nil
		}
	}
	return store.FederatedIdentity{}, store.ErrNotFound
}

func (d *directory) ListFederatedIdentities(_ context.Context, userID string) ([]store.FederatedIdentity, error) {
	var out []store.FederatedIdentity
	for _, l := range d.links {
		if l.UserID == userID {
			out = append(out, l)
		}
	}
	return out, nil
}

func (d *directory) GetUser(_ context.Context, id string) (store.User, error) {
	for _, u := range d.users {
		if u.ID == id {
			return u, nil
		}
	}
	return store.User{}, store.ErrNotFound
}

func (d *directory) GetUserByEmail(_ context.Context, email string) (store.User, error) {
	for _, u := range d.users {
		if strings.EqualFold(u.Email, email) {
			return u, nil
		}
	}
	return store.User{}, store.ErrNotFound
}

func TestDecide(t *testing.T) {
	ann := store.User{ID: "usr_ann", Email: "ann@example.com", Active: true, EmailVerified: true}
	bob := store.User{ID: "usr_bob", Email: "bob@example.com", Active: true, EmailVerified: false}
	cyd := store.User{ID: "usr_cyd", Email: "cyd@example.com", Active: false, EmailVerified: true}
	dan := store.User{ID: "usr_dan", Email: "dan@corp.example", Active: true, EmailVerified: true}
	eve := store.User{ID: "usr_eve", Email: "eve@example.com", Active: true, EmailVerified: true}
	// fay holds an identity of social, which vouches for no domain (a
	// squatter's, maybe); gus one of mail, which owns example.com; hal one
	// of a provider no longer configured. ivy's google identity was linked
	// before issuers were kept, and its provider was not configured when
	// they began to be (its issuer is unknown).
	fay := store.User{ID: "usr_fay", Email: "fay@example.com", Active: true, EmailVerified: true}
	gus := store.User{ID: "usr_gus", Email: "gus@example.com", Active: true, EmailVerified: true}
	hal := store.User{ID: "usr_hal", Email: "hal@example.com", Active: true, EmailVerified: true}
	ivy := store.User{ID: "usr_ivy", Email: "ivy@example.com", Active: true, EmailVerified: true}
	// jay registered publicly: the password may be a squatter's, though the
	// owner redeemed the verification link (found by a review).
	jay := store.User{ID: "usr_jay", Email: "jay@example.com", Active: true, EmailVerified: true, PasswordUnproven: true}
	const issGoogle, issCorp = "https://accounts.google.com", "https://login.corp.example"
	dir := &directory{
		users: []store.User{ann, bob, cyd, dan, eve, fay, gus, hal, ivy, jay},
		links: []store.FederatedIdentity{
			{Provider: "google", Issuer: issGoogle, Subject: "g-ann", UserID: ann.ID},
			{Provider: "google", Issuer: issGoogle, Subject: "g-cyd", UserID: cyd.ID},
			{Provider: "corp", Issuer: issCorp, Subject: "c-dan-old", UserID: dan.ID},
			{Provider: "social", Issuer: "https://social.example", Subject: "s-fay", UserID: fay.ID},
			{Provider: "mail", Issuer: "https://mail.example", Subject: "m-gus", UserID: gus.ID},
			{Provider: "gone", Issuer: "https://gone.example", Subject: "x-hal", UserID: hal.ID},
			{Provider: "google", Issuer: store.IssuerUnknown, Subject: "g-ivy", UserID: ivy.ID},
		},
	}
	// The configured providers that judge the identities an account holds.
	ps, err := upstream.NewProviders(&upstream.Provider{ID: "social"},
		&upstream.Provider{ID: "mail", AllowedDomains: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	google := &upstream.Provider{ID: "google", Issuer: issGoogle, Link: upstream.LinkConfirm}
	jit := &upstream.Provider{ID: "google", Issuer: issGoogle, Link: upstream.LinkConfirm, JIT: upstream.JIT{Enabled: true, DefaultRole: "user"}}
	auto := &upstream.Provider{ID: "google", Issuer: issGoogle, Link: upstream.LinkVerifiedEmailAuto, AllowedDomains: []string{"example.com"}}
	autoNoDomains := &upstream.Provider{ID: "google", Issuer: issGoogle, Link: upstream.LinkVerifiedEmailAuto}
	corp := &upstream.Provider{ID: "corp", Issuer: issCorp, Link: upstream.LinkVerifiedEmailAuto, AllowedDomains: []string{"corp.example"}}
	// The id google pointed at another issuer (moved, or deleted and given
	// to another provider): its subs are another issuer's accounts.
	moved := &upstream.Provider{ID: "google", Issuer: "https://google.elsewhere.example", Link: upstream.LinkConfirm,
		JIT: upstream.JIT{Enabled: true, DefaultRole: "user"}}
	// No issuer at all (a provider built in code): it matches no link.
	noIssuer := &upstream.Provider{ID: "google", Link: upstream.LinkConfirm}
	verified := func(sub, email string) upstream.Claims {
		return upstream.Claims{Subject: sub, Email: email, EmailVerified: true}
	}
	unverified := func(sub, email string) upstream.Claims { return upstream.Claims{Subject: sub, Email: email} }
	invite := &store.Invite{ID: "inv_1", Email: "New@Example.com", Role: "admin", Status: store.InvitePending}

	for _, tc := range []struct {
		name     string
		in       upstream.Input
		outcome  upstream.Outcome
		userID   string
		role     string
		refusal  string
		refuseID string
	}{
		{"ok/known_sub_logs_in", upstream.Input{Provider: google, Claims: verified("g-ann", "ann@example.com")}, upstream.OutcomeLogin, ann.ID, "", "", ""},
		{"ok/known_sub_after_upstream_email_change", upstream.Input{Provider: google, Claims: unverified("g-ann", "someone-else@example.com")}, upstream.OutcomeLogin, ann.ID, "", "", ""},
		{"ok/known_sub_without_email", upstream.Input{Provider: google, Claims: upstream.Claims{Subject: "g-ann"}}, upstream.OutcomeLogin, ann.ID, "", "", ""},
		{"fail/known_sub_deactivated", upstream.Input{Provider: google, Claims: verified("g-cyd", "cyd@example.com")}, "", "", "", upstream.ReasonDeactivated, cyd.ID},
		{"fail/same_sub_other_provider_is_unknown", upstream.Input{Provider: corp, Claims: verified("g-ann", "x@corp.example")}, "", "", "", upstream.ReasonNoAccount, ""},
		{"ok/same_sub_other_issuer_is_unknown_created", upstream.Input{Provider: moved, Claims: verified("g-ann", "mallory@example.com")}, upstream.OutcomeCreate, "", "user", "", ""},
		{"fail/same_sub_other_issuer_without_email_is_unknown", upstream.Input{Provider: moved, Claims: upstream.Claims{Subject: "g-ann"}}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/other_issuer_holder_of_the_old_link_already_linked", upstream.Input{Provider: moved, Claims: verified("g-ann-new", "ann@example.com")}, "", "", "", upstream.ReasonAlreadyLinked, ann.ID},
		{"fail/no_issuer_matches_no_link", upstream.Input{Provider: noIssuer, Claims: upstream.Claims{Subject: "g-ann"}}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/unknown_issuer_link_signs_nobody_in", upstream.Input{Provider: google, Claims: upstream.Claims{Subject: "g-ivy"}}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/unknown_issuer_link_holds_the_provider_id", upstream.Input{Provider: google, Claims: verified("g-ivy", "ivy@example.com")}, "", "", "", upstream.ReasonAlreadyLinked, ivy.ID},
		{"ok/unknown_sub_verified_email_needs_confirmation", upstream.Input{Provider: google, Claims: verified("g-new", "EVE@example.com")}, upstream.OutcomeConfirm, eve.ID, "", "", ""},
		{"fail/nOAuth_unverified_email_of_a_local_user_is_not_linked", upstream.Input{Provider: google, Claims: unverified("g-evil", "eve@example.com")}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/nOAuth_even_with_auto_link", upstream.Input{Provider: auto, Claims: unverified("g-evil", "ann@example.com")}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/unverified_email_even_with_jit", upstream.Input{Provider: jit, Claims: unverified("g-new", "new@example.com")}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/no_email", upstream.Input{Provider: jit, Claims: upstream.Claims{Subject: "g-new"}}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/local_email_unverified_never_linked", upstream.Input{Provider: auto, Claims: verified("g-bob", "bob@example.com")}, "", "", "", upstream.ReasonLocalEmailUnverified, bob.ID},
		{"fail/local_email_unverified_not_even_confirmed", upstream.Input{Provider: google, Claims: verified("g-bob", "bob@example.com")}, "", "", "", upstream.ReasonLocalEmailUnverified, bob.ID},
		{"fail/local_user_deactivated", upstream.Input{Provider: auto, Claims: verified("g-cyd2", "cyd@example.com")}, "", "", "", upstream.ReasonDeactivated, cyd.ID},
		{"ok/auto_link_every_condition", upstream.Input{Provider: auto, Claims: verified("g-ann2", "eve@example.com")}, upstream.OutcomeAutoLink, eve.ID, "", "", ""},
		{"ok/auto_link_beside_a_vouching_providers_identity", upstream.Input{Provider: auto, Claims: verified("g-gus", "gus@example.com")}, upstream.OutcomeAutoLink, gus.ID, "", "", ""},
		{"fail/auto_link_refused_beside_an_unvouched_identity_confirms", upstream.Input{Provider: auto, Claims: verified("g-fay", "fay@example.com")}, upstream.OutcomeConfirm, fay.ID, "", "", ""},
		{"fail/auto_link_refused_to_an_unproven_password_confirms", upstream.Input{Provider: auto, Claims: verified("g-jay", "jay@example.com")}, upstream.OutcomeConfirm, jay.ID, "", "", ""},
		{"fail/auto_link_refused_beside_an_unconfigured_providers_identity_confirms", upstream.Input{Provider: auto, Claims: verified("g-hal", "hal@example.com")}, upstream.OutcomeConfirm, hal.ID, "", "", ""},
		{"ok/auto_link_without_allowed_domains_falls_back_to_confirm", upstream.Input{Provider: autoNoDomains, Claims: verified("g-ann2", "eve@example.com")}, upstream.OutcomeConfirm, eve.ID, "", "", ""},
		{"fail/domain_outside_allowed_domains", upstream.Input{Provider: auto, Claims: verified("g-x", "x@other.example")}, "", "", "", upstream.ReasonDomainNotAllowed, ""},
		{"fail/allowed_domains_need_a_verified_email", upstream.Input{Provider: auto, Claims: unverified("g-ann", "ann@example.com")}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/allowed_domains_apply_to_known_subs", upstream.Input{Provider: corp, Claims: verified("c-dan-old", "dan@elsewhere.example")}, "", "", "", upstream.ReasonDomainNotAllowed, ""},
		{"fail/already_linked_at_provider", upstream.Input{Provider: corp, Claims: verified("c-dan-new", "dan@corp.example")}, "", "", "", upstream.ReasonAlreadyLinked, dan.ID},
		{"fail/other_account_already_linked_gets_confirmation_not_login", upstream.Input{Provider: google, Claims: verified("g-evil", "ann@example.com")}, "", "", "", upstream.ReasonAlreadyLinked, ann.ID},
		{"fail/jit_off", upstream.Input{Provider: google, Claims: verified("g-new", "new@example.com")}, "", "", "", upstream.ReasonNoAccount, ""},
		{"ok/jit_on", upstream.Input{Provider: jit, Claims: verified("g-new", "new@example.com")}, upstream.OutcomeCreate, "", "user", "", ""},
		{"ok/jit_never_for_an_existing_email", upstream.Input{Provider: jit, Claims: verified("g-new", "eve@example.com")}, upstream.OutcomeConfirm, eve.ID, "", "", ""},
		{"ok/invite_for_the_verified_email", upstream.Input{Provider: google, Claims: verified("g-new", "new@example.com"), Invite: invite}, upstream.OutcomeAcceptInvite, "", "admin", "", ""},
		{"fail/invite_for_another_email", upstream.Input{Provider: jit, Claims: verified("g-new", "other@example.com"), Invite: invite}, "", "", "", upstream.ReasonInviteMismatch, ""},
		{"fail/invite_with_unverified_email", upstream.Input{Provider: google, Claims: unverified("g-new", "new@example.com"), Invite: invite}, "", "", "", upstream.ReasonEmailUnverified, ""},
		{"fail/unknown_provider", upstream.Input{Claims: verified("g-ann", "ann@example.com")}, "", "", "", upstream.ReasonUnknownProvider, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := upstream.Decide(context.Background(), dir, ps, tc.in)
			if tc.refusal != "" {
				var r *upstream.Refusal
				if !errors.As(err, &r) || r.Reason != tc.refusal || r.UserID != tc.refuseID {
					t.Fatalf("Decide = %+v, %v; want refusal %s (user %q)", d.Outcome, err, tc.refusal, tc.refuseID)
				}
				if strings.Contains(r.Error(), "@") {
					t.Fatalf("refusal %q names an address", r.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Outcome != tc.outcome || d.User.ID != tc.userID || d.Role != tc.role {
				t.Fatalf("Decide = %s user %q role %q; want %s user %q role %q", d.Outcome, d.User.ID, d.Role, tc.outcome, tc.userID, tc.role)
			}
		})
	}
	t.Run("fail/store_down_is_not_a_refusal", func(t *testing.T) {
		down := &directory{fail: store.ErrUnavailable}
		_, err := upstream.Decide(context.Background(), down, ps, upstream.Input{Provider: google, Claims: verified("x", "x@example.com")})
		var r *upstream.Refusal
		if err == nil || errors.As(err, &r) || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Decide = %v; want the store error", err)
		}
	})
}

func TestAMR(t *testing.T) {
	trusted := &upstream.Provider{ID: "p", TrustMFA: true}
	plain := &upstream.Provider{ID: "p"}
	for _, tc := range []struct {
		name string
		p    *upstream.Provider
		amr  []string
		want []string
	}{
		{"ok/fed_alone", plain, nil, []string{"fed"}},
		{"ok/upstream_mfa_ignored_without_trust", plain, []string{"pwd", "otp", "mfa"}, []string{"fed"}},
		{"ok/upstream_mfa_counts_with_trust", trusted, []string{"pwd", "otp", "mfa"}, []string{"fed", "otp", "mfa"}},
		{"ok/trusted_without_mfa_claim", trusted, []string{"pwd", "otp"}, []string{"fed"}},
		{"ok/never_pwd", trusted, []string{"pwd", "mfa"}, []string{"fed", "mfa"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := upstream.AMR(tc.p, upstream.Claims{AMR: tc.amr}); !slices.Equal(got, tc.want) {
				t.Fatalf("AMR = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestVouchesForEmail: a provider's email_verified counts here only for a
// domain in its allowed_domains; an empty list (every domain may sign in)
// makes it authoritative for none.
func TestVouchesForEmail(t *testing.T) {
	owner := &upstream.Provider{ID: "corp", AllowedDomains: []string{"example.com"}}
	open := &upstream.Provider{ID: "social"}
	for _, tc := range []struct {
		name string
		p    *upstream.Provider
		c    upstream.Claims
		want bool
	}{
		{"ok/verified_in_allowed_domain", owner, upstream.Claims{Email: "boss@example.com", EmailVerified: true}, true},
		{"ok/domain_case_insensitive", owner, upstream.Claims{Email: "Boss@EXAMPLE.com", EmailVerified: true}, true},
		{"fail/no_allowed_domains_vouches_for_nobody", open, upstream.Claims{Email: "boss@example.com", EmailVerified: true}, false},
		{"fail/other_domain", owner, upstream.Claims{Email: "boss@example.org", EmailVerified: true}, false},
		{"fail/subdomain_is_another_domain", owner, upstream.Claims{Email: "boss@mail.example.com", EmailVerified: true}, false},
		{"fail/not_verified", owner, upstream.Claims{Email: "boss@example.com"}, false},
		{"fail/no_email", owner, upstream.Claims{EmailVerified: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.VouchesForEmail(tc.c); got != tc.want {
				t.Fatalf("VouchesForEmail(%+v) = %v, want %v", tc.c, got, tc.want)
			}
		})
	}
}

// TestProvidersVouchFor: an identity already linked is judged against the
// account's address by its provider's allowed_domains; a provider without
// them, or no longer configured, vouches for nothing.
func TestProvidersVouchFor(t *testing.T) {
	ps, err := upstream.NewProviders(&upstream.Provider{ID: "corp", AllowedDomains: []string{"example.com"}},
		&upstream.Provider{ID: "social"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		ps       *upstream.Providers
		provider string
		email    string
		want     bool
	}{
		{"ok/the_domains_provider", ps, "corp", "boss@example.com", true},
		{"ok/domain_case_insensitive", ps, "corp", "Boss@Example.COM", true},
		{"fail/other_domain", ps, "corp", "boss@example.org", false},
		{"fail/no_allowed_domains", ps, "social", "boss@example.com", false},
		{"fail/provider_no_longer_configured", ps, "gone", "boss@example.com", false},
		{"fail/no_providers_file", nil, "corp", "boss@example.com", false},
		{"fail/malformed_address", ps, "corp", "example.com", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ps.VouchesFor(tc.provider, tc.email); got != tc.want {
				t.Fatalf("VouchesFor(%q, %q) = %v, want %v", tc.provider, tc.email, got, tc.want)
			}
		})
	}
}

// createdAccounts records the just-in-time accounts Apply asks for.
type createdAccounts struct {
	noAccounts
	got []accounts.FederatedUser
}

func (c *createdAccounts) CreateFederatedUser(_ context.Context, _ accounts.Meta, f accounts.FederatedUser) (store.User, error) {
	c.got = append(c.got, f)
	return store.User{ID: "usr_new", Email: f.Email, Active: true, EmailVerified: f.EmailVerified}, nil
}

// TestApplyCreateVerifiesOnlyAnAuthoritativeProvidersEmail: a just-in-time
// account's email is verified only on the word of a provider whose
// allowed_domains hold its domain. An account that a provider without
// allowed_domains created for boss@example.com is unverified, so a
// verified_email_auto provider that owns example.com is refused it
// (local_email_unverified) instead of linking to it automatically; one
// that a provider owning example.com created is verified and linked.
func TestApplyCreateVerifiesOnlyAnAuthoritativeProvidersEmail(t *testing.T) {
	social := &upstream.Provider{ID: "social", Issuer: "https://social.example", Link: upstream.LinkConfirm,
		JIT: upstream.JIT{Enabled: true, DefaultRole: "user"}}
	corp := &upstream.Provider{ID: "corp", Issuer: "https://login.corp.example", Link: upstream.LinkVerifiedEmailAuto,
		AllowedDomains: []string{"example.com"}, JIT: upstream.JIT{Enabled: true, DefaultRole: "user"}}
	// mail also owns example.com and links by verified_email_auto.
	mail := &upstream.Provider{ID: "mail", Issuer: "https://mail.example", Link: upstream.LinkVerifiedEmailAuto,
		AllowedDomains: []string{"example.com"}}
	for _, tc := range []struct {
		name         string
		creator      *upstream.Provider
		wantVerified bool
		// what mail then decides for its upstream account of that email
		wantOutcome upstream.Outcome
		wantRefusal string
	}{
		{"fail/created_by_a_provider_without_allowed_domains", social, false, "", upstream.ReasonLocalEmailUnverified},
		{"ok/created_by_the_domains_provider", corp, true, upstream.OutcomeAutoLink, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := &memStore{}
			acc := &createdAccounts{}
			ps, err := upstream.NewProviders(social, corp, mail)
			if err != nil {
				t.Fatal(err)
			}
			svc, err := upstream.New(upstream.Deps{Providers: ps, Verifier: upstream.NewVerifier(nil, nil), Store: dir,
				Accounts: acc, Audit: &auditLog{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			first := upstream.Claims{Subject: "first", Email: "boss@example.com", EmailVerified: true}
			d, err := svc.Decide(ctx, upstream.Input{Provider: tc.creator, Claims: first})
			if err != nil || d.Outcome != upstream.OutcomeCreate {
				t.Fatalf("Decide = %+v, %v; want create", d.Outcome, err)
			}
			u, err := svc.Apply(ctx, d, upstream.Meta{})
			if err != nil || len(acc.got) != 1 || acc.got[0].EmailVerified != tc.wantVerified || acc.got[0].Issuer != tc.creator.Issuer {
				t.Fatalf("Apply = %+v, %v; created %+v, want email_verified %v, issuer %s", u, err, acc.got, tc.wantVerified, tc.creator.Issuer)
			}
			dir.users = append(dir.users, u)
			dir.links = append(dir.links, store.FederatedIdentity{Provider: tc.creator.ID, Issuer: tc.creator.Issuer, Subject: "first", UserID: u.ID})

			d, err = svc.Decide(ctx, upstream.Input{Provider: mail, Claims: upstream.Claims{Subject: "second", Email: "boss@example.com", EmailVerified: true}})
			if tc.wantRefusal != "" {
				var r *upstream.Refusal
				if !errors.As(err, &r) || r.Reason != tc.wantRefusal || r.UserID != u.ID {
					t.Fatalf("mail's Decide = %+v, %v; want refusal %s", d.Outcome, err, tc.wantRefusal)
				}
				return
			}
			if err != nil || d.Outcome != tc.wantOutcome || d.User.ID != u.ID {
				t.Fatalf("mail's Decide = %+v user %q, %v; want %s user %q", d.Outcome, d.User.ID, err, tc.wantOutcome, u.ID)
			}
		})
	}
}
