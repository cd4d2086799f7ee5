package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestForeignHashOfTypedPasswordRehashedAtSignIn: an account imported with
// an argon2id hash of the password as typed (one U+FB01 ligature, which
// NFKC turns into "fi"), marked PasswordHashForeign, signs in with that
// password; the sign-in replaces the hash by Portcullis's own (of the NFKC
// form: the password written with "fi" then signs in too) and clears the
// mark. An account created by Portcullis with the same password is never
// marked. Found by a review: the password as typed was tried for every
// hash, an unknown account's dummy included, so the mark now decides it.
func TestForeignHashOfTypedPasswordRehashedAtSignIn(t *testing.T) {
	const typed = "correct horse battery staple \ufb01"
	const nfkc = "correct horse battery staple fi"
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			s := in.App.Core.Store
			c := context.Background()
			salt := make([]byte, 16)
			if _, err := rand.Read(salt); err != nil {
				t.Fatal(err)
			}
			enc := base64.RawStdEncoding.EncodeToString
			imported := fmt.Sprintf("$argon2id$v=19$m=65536,t=3,p=4$%s$%s", enc(salt), enc(argon2.IDKey([]byte(typed), salt, 3, 65536, 4, 32)))
			u := store.User{Email: "imported@example.com", PasswordHash: imported, PasswordHashForeign: true, Active: true,
				EmailVerified: true, Roles: []string{"user"}}
			if err := s.CreateUser(c, &u); err != nil {
				t.Fatal(err)
			}
			own := fx.User(t, "own@example.com", typed, "user")
			secret := fx.Client(t, clients.Spec{ID: "web"})
			cl := in.Client(t)
			login := func(email, pw string) {
				t.Helper()
				cl.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", secret)).ExpectStatus(200)
			}

			login(u.Email, typed)
			got, err := s.GetUser(c, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.PasswordHash == imported || !strings.HasPrefix(got.PasswordHash, "$argon2id$v=19$m=8192,t=1,") || got.PasswordHashForeign {
				t.Fatalf("after the sign-in: hash replaced %v (%.30s), foreign %v; want Portcullis's hash, unmarked",
					got.PasswordHash != imported, got.PasswordHash, got.PasswordHashForeign)
			}
			login(u.Email, nfkc) // the new hash is of the NFKC form
			login(u.Email, typed)

			if got, _ := s.GetUser(c, own.ID); got.PasswordHashForeign {
				t.Fatalf("an account Portcullis created is marked foreign")
			}
			login(own.Email, typed)
		})
	}
}
