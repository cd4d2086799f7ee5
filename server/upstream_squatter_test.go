package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
)

// TestReviewLinksRegistrantSquatterGetsVerifiedAndLinked (found by a
// review; it failed before the fix): someone registers the owner's address
// with a password of their own and the owner, asked to confirm that the
// address is theirs, redeems the verification link. The owner's sign-in
// with a verified_email_auto provider must not then be linked automatically
// to the registrant's account: it goes to confirmation (the exchange is
// refused confirmation_required), even after the registrant changes the
// password while signed in. Once the owner sets the password with a reset
// link mailed to the address, the registrant's password no longer works
// and the provider links automatically.
func TestReviewLinksRegistrantSquatterGetsVerifiedAndLinked(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			corp := upstreamtest.New(t)
			file := filepath.Join(t.TempDir(), "providers.yaml")
			yaml := "providers:\n" + corp.ProviderYAML("corp", "    link: verified_email_auto", "    allowed_domains: [example.com]")
			if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			a := newAcctEnvOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file,
				"PORTCULLIS_PUBLIC_REGISTRATION": "true", "PORTCULLIS_RATE_LIMITS": "off"})
			e := &idpEnv{acctEnv: a, root: a.login(t, rootEmail, rootPass).AccessToken}
			const boss = "boss@example.com"
			const attackerPass = "the attacker's chosen passphrase"
			var reg struct{ ID string }
			e.c.PostJSON("/auth/register", map[string]string{"email": boss, "password": attackerPass}).ExpectStatus(http.StatusCreated).JSON(&reg)
			link := e.smtp.WaitFor(t, boss, mailWithin).Token(t)
			e.c.PostJSON("/auth/email/verify", map[string]string{"token": link}).ExpectStatus(http.StatusOK)
			ownerToken := func() string {
				return corp.IDToken(t, upstreamtest.Token{Subject: "real-boss", Email: boss, EmailVerified: upstreamtest.Bool(true)})
			}

			owner := e.exchange(t, ownerToken())
			if owner.StatusCode == http.StatusOK {
				ownerSub := decodeClaims(t, owner.Token().AccessToken)["sub"]
				attacker := a.login(t, boss, attackerPass)
				if attackerSub := decodeClaims(t, attacker.AccessToken)["sub"]; attackerSub == ownerSub {
					t.Fatalf("the owner's corp sign-in was linked automatically to the registrant's account %v, which the registrant still signs in to with their own password", ownerSub)
				}
			}
			e.refused(t, owner, "confirmation_required")
			if ids := e.identities(t, reg.ID); len(ids) != 0 {
				t.Fatalf("the registrant's account was linked: %v", ids)
			}

			// A change made while signed in keeps the account unproven: its
			// holder may be the registrant.
			tok := a.login(t, boss, attackerPass).AccessToken
			const changed = "the attacker's second passphrase"
			e.c.PostJSON("/auth/password/change", map[string]string{"current_password": attackerPass, "new_password": changed},
				st.Bearer(tok)).ExpectStatus(http.StatusOK)
			e.refused(t, e.exchange(t, ownerToken()), "confirmation_required")

			// The owner proves the mailbox with a reset link: the registrant's
			// password stops working and corp links automatically.
			e.c.PostJSON("/auth/password/forgot", map[string]string{"email": boss}).ExpectStatus(http.StatusAccepted)
			reset := e.smtp.WaitFor(t, boss, mailWithin).Token(t)
			e.c.PostJSON("/auth/password/reset", map[string]string{"token": reset, "new_password": "the owner's own passphrase"}).
				ExpectStatus(http.StatusNoContent)
			a.loginFails(t, boss, changed)
			linked := e.exchange(t, ownerToken()).ExpectStatus(http.StatusOK)
			if sub := decodeClaims(t, linked.Token().AccessToken)["sub"]; sub != reg.ID {
				t.Fatalf("after the reset the owner signed in as %v, want the account %s", sub, reg.ID)
			}
			if ids := e.identities(t, reg.ID); len(ids) != 1 || ids[0]["provider"] != "corp" {
				t.Fatalf("identities after the reset = %v, want corp", ids)
			}
		})
	}
}
