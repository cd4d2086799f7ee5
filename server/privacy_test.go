package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestLoginTimingHidesImportedHashes: a wrong password for an account whose
// stored hash is not at the current parameters (an imported bcrypt hash of
// cost 10, an imported argon2id hash of argon2-cffi's defaults) takes the
// time an unknown account takes, once the instance has refused one of each
// class (docs/security.md: "Telling which addresses have an account from
// the time of a wrong password"). Found by a review; failed before every
// refusal was padded to the slowest class: medians bcrypt 142 ms and
// argon2-cffi 449 ms against 66 and 64 ms for an unknown account.
func TestLoginTimingHidesImportedHashes(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_RATE_LIMITS"] = "off"
	delete(env, "PORTCULLIS_ARGON2_MEMORY") // production parameters, as TestLoginTimingHidesAccounts
	delete(env, "PORTCULLIS_ARGON2_TIME")
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, "current@example.com", userPass, "user") // control: current parameters
	mk := func(email, hash string) {
		u := store.User{Email: email, PasswordHash: hash, Active: true, EmailVerified: true, Roles: []string{"user"}}
		if err := in.App.Core.Store.CreateUser(context.Background(), &u); err != nil {
			t.Fatal(err)
		}
	}
	bc, err := bcrypt.GenerateFromPassword([]byte(userPass), bcrypt.DefaultCost) // cost 10
	if err != nil {
		t.Fatal(err)
	}
	mk("bcrypt@example.com", string(bc))
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	key := argon2.IDKey([]byte(userPass), salt, 3, 65536, 4, 32) // argon2-cffi's defaults
	enc := base64.RawStdEncoding.EncodeToString
	mk("argon2cffi@example.com", fmt.Sprintf("$argon2id$v=19$m=65536,t=3,p=4$%s$%s", enc(salt), enc(key)))

	secret := fx.Client(t, clients.Spec{ID: "web"})
	c := in.Client(t)
	measure := func(login string) time.Duration {
		start := time.Now()
		c.PostForm("/oauth2/token", st.PasswordForm(login, "not the password", ""), st.Basic("web", secret)).ExpectError(400, "invalid_grant")
		return time.Since(start)
	}
	known := []string{"current@example.com", "bcrypt@example.com", "argon2cffi@example.com"}
	for _, login := range known { // the instance's first refusal of each class
		measure(login)
	}
	// Every refusal now takes the slowest class's time, so one sample of
	// unknown accounts serves the three; the four kinds take turns going
	// first (see TestLoginTimingHidesAccounts). A round skewed by other
	// tests' load is forgiven: a leak fails every round.
	var failed []string
	for round := 0; round < 3; round++ {
		samples := map[string][]time.Duration{}
		kinds := append([]string{"nobody"}, known...)
		for i := 0; i < 11; i++ {
			for j := range kinds {
				kind := kinds[(i+j)%len(kinds)]
				login := kind
				if kind == "nobody" {
					login = fmt.Sprintf("nobody-%d-%d@example.com", round, i)
				}
				samples[kind] = append(samples[kind], measure(login))
			}
		}
		mu := median(samples["nobody"])
		failed = failed[:0]
		for _, login := range known {
			mk := median(samples[login])
			ratio := float64(mk) / float64(mu)
			t.Logf("round %d: %s: median wrong password %s, unknown account %s (ratio %.2f)", round, login, mk, mu, ratio)
			if ratio < 0.7 || ratio > 1.3 {
				failed = append(failed, fmt.Sprintf("%s: a wrong password takes %s, an unknown account %s", login, mk, mu))
			}
		}
		if len(failed) == 0 {
			return
		}
	}
	t.Fatalf("the time of a wrong password tells the account exists in three rounds: %v", failed)
}
