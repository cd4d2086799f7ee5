package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
)

// emailKeyProviders writes a providers file with one verified_email_auto
// provider, corp, authoritative for example.com.
func emailKeyProviders(t *testing.T, corp *upstreamtest.Provider) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "providers.yaml")
	yaml := "providers:\n" + corp.ProviderYAML("corp", "    link: verified_email_auto", "    allowed_domains: [example.com]")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestReviewEmailKeyNonASCIIFoldSquat (found by a review; it failed before
// the fix): the account key was strings.ToLower of the address, which maps
// U+0130 (a dotted capital I) to ASCII "i", while mail goes to the stored
// form. A registrant of "b\u0130ll@example.com", another mailbox, held the
// account of bill@example.com: the owner could not register, the owner's
// reset was mailed to the registrant's form, and once the registrant had
// verified and reset there, the owner's corp sign-in (verified_email_auto)
// was linked automatically to the registrant's account. The key now folds
// only ASCII letters (store.EmailKey): the two are two accounts.
func TestReviewEmailKeyNonASCIIFoldSquat(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			corp := upstreamtest.New(t)
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": emailKeyProviders(t, corp),
				"PORTCULLIS_PUBLIC_REGISTRATION": "true", "PORTCULLIS_RATE_LIMITS": "off"})
			e := &idpEnv{acctEnv: a, root: a.login(t, rootEmail, rootPass).AccessToken}
			const owner = "bill@example.com"
			const squat = "b\u0130ll@example.com" // another mailbox
			const squatPass = "the squatter's chosen passphrase"

			var reg struct{ ID, Email string }
			e.c.PostJSON("/auth/register", map[string]string{"email": squat, "password": squatPass}).ExpectStatus(http.StatusCreated).JSON(&reg)

			// The owner's own address is not taken.
			r := e.c.PostJSON("/auth/register", map[string]string{"email": owner, "password": "the owner's passphrase"})
			if r.StatusCode != http.StatusCreated {
				t.Errorf("owner's registration of %s: %d %s (the squatter's %q holds it)", owner, r.StatusCode, r.Body, squat)
			}

			// The owner's reset goes to the owner's mailbox.
			before := len(e.smtp.Messages())
			e.c.PostJSON("/auth/password/forgot", map[string]string{"email": owner}).ExpectStatus(http.StatusAccepted)
			a.in.App.Accounts.Wait()
			for _, m := range e.smtp.Messages()[before:] {
				for _, to := range m.To {
					if to != owner {
						t.Errorf("the owner's reset went to %q, not to %q", to, owner)
					}
				}
			}

			// The owner's corp sign-in is refused: the account is unverified.
			e.refused(t, e.exchange(t, corp.IDToken(t, upstreamtest.Token{Subject: "real-bill", Email: owner, EmailVerified: upstreamtest.Bool(true)})), "local_email_unverified")

			// The squatter, reading mail at their own form, verifies and resets.
			vtok := e.smtp.WaitFor(t, squat, mailWithin).Token(t)
			e.c.PostJSON("/auth/email/verify", map[string]string{"token": vtok}).ExpectStatus(http.StatusOK)
			e.c.PostJSON("/auth/password/forgot", map[string]string{"email": squat}).ExpectStatus(http.StatusAccepted)
			a.in.App.Accounts.Wait()
			msgs := e.smtp.Messages()
			last := msgs[len(msgs)-1]
			if len(last.To) != 1 || last.To[0] != squat {
				t.Fatalf("the squatter's reset went to %q, not to %q", last.To, squat)
			}
			e.c.PostJSON("/auth/password/reset", map[string]string{"token": last.Token(t), "new_password": squatPass + " 2"}).ExpectStatus(http.StatusNoContent)

			// The owner signs in at corp with the verified address bill@example.com.
			ex := e.exchange(t, corp.IDToken(t, upstreamtest.Token{Subject: "real-bill", Email: owner, EmailVerified: upstreamtest.Bool(true)}))
			if ex.StatusCode == http.StatusOK {
				sub := decodeClaims(t, ex.Token().AccessToken)["sub"]
				sq := decodeClaims(t, a.login(t, squat, squatPass+" 2").AccessToken)["sub"]
				if sub == sq {
					t.Fatalf("the owner's corp sign-in (%s) was linked automatically to the squatter's account %v (email %q); identities %v",
						owner, sub, reg.Email, e.identities(t, reg.ID))
				}
			}
		})
	}
}

// TestReviewEmailKeyNonASCIIFoldUpstream (found by a review; it failed
// before the fix): a provider's verified email was matched to a local
// account by the same fold, so a corp token for "b\u0130ll@example.com"
// (another mailbox) signed in, linked automatically, as bill@example.com.
func TestReviewEmailKeyNonASCIIFoldUpstream(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			corp := upstreamtest.New(t)
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": emailKeyProviders(t, corp)})
			e := &idpEnv{acctEnv: a, root: a.login(t, rootEmail, rootPass).AccessToken}
			bill := a.fx.User(t, "bill@example.com", "bill's own passphrase", "user")
			ex := e.exchange(t, corp.IDToken(t, upstreamtest.Token{Subject: "other-person", Email: "b\u0130ll@example.com", EmailVerified: upstreamtest.Bool(true)}))
			if ex.StatusCode == http.StatusOK {
				if sub := decodeClaims(t, ex.Token().AccessToken)["sub"]; sub == bill.ID {
					t.Fatalf("a corp sign-in verified for %q was linked automatically to %s's account %s", "b\u0130ll@example.com", bill.Email, bill.ID)
				}
			}
		})
	}
}
