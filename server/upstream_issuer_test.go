package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// providersFile writes a providers file holding the "gitlab" entry of op
// (just-in-time creation, allowed_domains example.com) and the "other"
// entries of others, and returns its path.
func providersFile(t *testing.T, name string, op *upstreamtest.Provider, others ...*upstreamtest.Provider) string {
	t.Helper()
	yaml := "providers:\n"
	if op != nil {
		yaml += op.ProviderYAML("gitlab", "    allowed_domains: [example.com]", "    jit: {enabled: true, default_role: user}")
	}
	for _, o := range others {
		yaml += o.ProviderYAML("other")
	}
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestUpstreamProviderIssuerChange checks that a link is the upstream
// account of the issuer it was made under (OIDC Core 5.7: iss and sub
// together): when the operator points a provider id at another issuer, or
// deletes a provider and later gives its id to another one, the new
// issuer's account with the same sub is an unknown subject (here created
// just in time), never the account linked under the old issuer; with the
// issuer unchanged across restarts the link still signs its person in.
// Found by a review: before the issuer was kept, sub 42 of the new issuer
// signed in as alice.
func TestUpstreamProviderIssuerChange(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name string
				// files are the providers files of the instances started
				// after the one alice linked under; the last one signs sub 42
				// of its gitlab in.
				files  func(before, after, other *upstreamtest.Provider) []string
				sameAs bool // the last gitlab is before: sub 42 is alice again
			}{
				{"issuer_moved", func(_, after, _ *upstreamtest.Provider) []string {
					return []string{providersFile(t, "after.yaml", after)}
				}, false},
				{"id_deleted_then_reused", func(_, after, other *upstreamtest.Provider) []string {
					return []string{providersFile(t, "deleted.yaml", nil, other), providersFile(t, "after.yaml", after)}
				}, false},
				{"issuer_kept", func(before, _, _ *upstreamtest.Provider) []string {
					return []string{providersFile(t, "again.yaml", before)}
				}, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before, after, other := upstreamtest.New(t), upstreamtest.New(t), upstreamtest.New(t)
					env := st.NewEnv(t, b)
					env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = providersFile(t, "before.yaml", before)
					first := st.Start(t, env)
					alice := first.Client(t).PostForm("/oauth2/token", exchangeForm(before.IDToken(t, upstreamtest.Token{Subject: "42",
						Email: "alice@example.com", EmailVerified: upstreamtest.Bool(true)}))).Token()
					aliceID := decodeClaims(t, alice.AccessToken)["sub"]
					first.Stop()
					last := before
					if !tc.sameAs {
						last = after
					}
					var in *st.Instance
					for _, f := range tc.files(before, after, other) {
						if in != nil {
							in.Stop()
						}
						next := env.Clone()
						next["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = f
						in = st.Start(t, next)
					}
					r := in.Client(t).PostForm("/oauth2/token", exchangeForm(last.IDToken(t, upstreamtest.Token{Subject: "42",
						Email: "mallory@example.com", EmailVerified: upstreamtest.Bool(true)})))
					if tc.sameAs {
						if got := decodeClaims(t, r.Token().AccessToken)["sub"]; got != aliceID {
							t.Fatalf("alice's own sub 42 signed in as %v, want %v", got, aliceID)
						}
						return
					}
					if r.StatusCode != http.StatusOK {
						t.Fatalf("another issuer's sub 42 (mallory@example.com, just-in-time creation on) = %d %s, want 200 as a new account",
							r.StatusCode, r.Body)
					}
					if got := decodeClaims(t, r.Token().AccessToken)["sub"]; got == aliceID {
						t.Fatalf("another issuer's sub 42 (mallory@example.com) signed in as alice (%v)", aliceID)
					}
				})
			}
		})
	}
}

// TestUpstreamLinksBeforeIssuersWereKept: a link written before issuers
// were kept (an empty issuer, as migration 19 leaves it) signs nobody in
// by itself; the first start gives it the issuer of its provider in the
// providers file in force, after which its person signs in again. A link
// whose provider that start does not configure is marked unknown for good:
// a provider given its id later (another issuer) does not inherit it, and
// the admin listing shows it with an empty issuer.
func TestUpstreamLinksBeforeIssuersWereKept(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			gitlab, reused := upstreamtest.New(t), upstreamtest.New(t)
			env := st.NewEnv(t, b)
			first := st.Start(t, env)
			fx := st.NewFixtures(t, first.App.Core)
			alice := fx.User(t, "alice@example.com", "alice's long passphrase", "user")
			bob := fx.User(t, "bob@example.com", "bob's long passphrase", "user")
			// Links as binaries before migration 19 wrote them: alice's at
			// gitlab (configured at the next start), bob's at "other" (not).
			for _, l := range [][3]string{{"gitlab", "42", alice.ID}, {"other", "42", bob.ID}} {
				if err := first.App.Core.Store.DB().WithContext(ctx).Exec(`INSERT INTO federated_identities
					(provider, subject, user_id, email, linked_at) VALUES (?, ?, ?, '', ?)`, l[0], l[1], l[2], time.Now().UTC()).Error; err != nil {
					t.Fatal(err)
				}
			}
			first.Stop()
			sub42 := func(op *upstreamtest.Provider, email string) *st.Response {
				return exchangeAt(t, env, op, upstreamtest.Token{Subject: "42", Email: email, EmailVerified: upstreamtest.Bool(true)})
			}

			// The first start with a providers file resolves alice's link.
			env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = providersFile(t, "gitlab.yaml", gitlab)
			if r := sub42(gitlab, "alice@example.com"); decodeClaims(t, r.Token().AccessToken)["sub"] != alice.ID {
				t.Fatalf("alice's link made before issuers were kept did not sign her in: %s", r.Body)
			}
			// "other" was not configured then: bob's link is unknown, and
			// a provider given that id later does not sign in as bob.
			env["PORTCULLIS_IDENTITY_PROVIDERS_FILE"] = providersFile(t, "reused.yaml", gitlab, reused)
			in := st.Start(t, env)
			r := in.Client(t).PostForm("/oauth2/token", exchangeForm(reused.IDToken(t, upstreamtest.Token{Subject: "42",
				Email: "bob@example.com", EmailVerified: upstreamtest.Bool(true)})))
			if r.StatusCode == http.StatusOK {
				t.Fatalf("the reused id \"other\" signed sub 42 in as %v; want a refusal", decodeClaims(t, r.Token().AccessToken)["sub"])
			}
			for _, tc := range []struct {
				user store.User
				want accounts.Identity
			}{
				{bob, accounts.Identity{Provider: "other", Issuer: "", Subject: "42"}},
				{alice, accounts.Identity{Provider: "gitlab", Issuer: gitlab.Issuer, Subject: "42"}},
			} {
				list, err := in.App.Accounts.UserIdentities(ctx, tc.user.ID)
				if err != nil || len(list.Items) != 1 {
					t.Fatalf("identities of %s = %+v, %v", tc.user.Email, list, err)
				}
				got := list.Items[0]
				got.LinkedAt = time.Time{}
				if got != tc.want {
					t.Fatalf("identity of %s = %+v, want %+v", tc.user.Email, got, tc.want)
				}
			}
		})
	}
}

// exchangeAt starts an instance of env and exchanges an id token of op
// for who there.
func exchangeAt(t *testing.T, env st.Env, op *upstreamtest.Provider, who upstreamtest.Token) *st.Response {
	t.Helper()
	in := st.Start(t, env)
	defer in.Stop()
	return in.Client(t).PostForm("/oauth2/token", exchangeForm(op.IDToken(t, who)))
}
