package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"golang.org/x/oauth2"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestGoLibrariesVerifyEveryGrantsTokens: the id and access tokens of every
// grant that issues an id token (password, refresh, mfa-otp, refresh after
// the second factor, mfa-recovery-code), signed with RS256, ES256 and
// EdDSA, pass the checks of the Go libraries Portcullis's users run:
// go-oidc's Verify (signature from discovery's JWKS, iss, aud, expiry, the
// algorithm) and VerifyAccessToken (at_hash); lestrrat-go/jwx's jwt.Parse
// with the JWKS (the id token for aud app; the access token for aud api
// with jti and client_id, typ at+jwt per RFC 9068). x/oauth2 sees
// mfa_required as a RetrieveError whose body holds the mfa_token, and
// go-oidc's UserInfo reads the user from /userinfo.
func TestGoLibrariesVerifyEveryGrantsTokens(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			d := newGrantsDeployment(t, st.PostgresRedis, st.Env{"PORTCULLIS_SIGNING_ALG": alg})
			ctx := t.Context()
			iss := d.in.Config.Issuer
			prov, err := oidc.NewProvider(ctx, iss)
			if err != nil {
				t.Fatalf("go-oidc discovery: %v", err)
			}
			var meta struct {
				JWKSURI string `json:"jwks_uri"`
			}
			if err := prov.Claims(&meta); err != nil {
				t.Fatal(err)
			}
			set, err := jwk.Fetch(ctx, meta.JWKSURI)
			if err != nil {
				t.Fatalf("jwx fetching the JWKS: %v", err)
			}
			conf := &oauth2.Config{ClientID: "app", ClientSecret: d.secrets["app"], Endpoint: prov.Endpoint(), Scopes: []string{"openid", "email"}}
			idToken := func(what string, tok *oauth2.Token) string {
				t.Helper()
				s, _ := tok.Extra("id_token").(string)
				if s == "" {
					t.Fatalf("%s: no id token", what)
				}
				return s
			}
			type issued struct{ grant, id, access string }
			var tokens []issued

			// password, and a refresh through x/oauth2's TokenSource.
			d.fx.User(t, "plain@example.com", mfaPass, "editor")
			tok, err := conf.PasswordCredentialsToken(ctx, "plain@example.com", mfaPass)
			if err != nil {
				t.Fatalf("password grant: %v", err)
			}
			tokens = append(tokens, issued{"password", idToken("password", tok), tok.AccessToken})
			info, err := prov.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil || info.Email != "plain@example.com" || !info.EmailVerified {
				t.Fatalf("go-oidc UserInfo: %+v %v", info, err)
			}
			fresh, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			tokens = append(tokens, issued{"refresh", idToken("refresh", fresh), fresh.AccessToken})

			// A user with TOTP: x/oauth2 gets mfa_required as a
			// RetrieveError, the mfa_token in its body.
			_, secret, codes := d.totpUser(t, "totp@example.com")
			_, err = conf.PasswordCredentialsToken(ctx, "totp@example.com", mfaPass)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "mfa_required" || re.Response.StatusCode != http.StatusBadRequest {
				t.Fatalf("x/oauth2 on mfa_required: %v", err)
			}
			var body struct {
				MFAToken string `json:"mfa_token"`
			}
			if err := json.Unmarshal(re.Body, &body); err != nil || body.MFAToken == "" {
				t.Fatalf("mfa_required body %s: %v", re.Body, err)
			}
			r := d.otp(t, "app", body.MFAToken, st.NextTOTPCode(t, secret)).ExpectStatus(http.StatusOK).Map()
			tokens = append(tokens, issued{"mfa-otp", r["id_token"].(string), r["access_token"].(string)})
			after, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: r["refresh_token"].(string)}).Token()
			if err != nil {
				t.Fatalf("refresh after the second factor: %v", err)
			}
			tokens = append(tokens, issued{"refresh after mfa", idToken("refresh after mfa", after), after.AccessToken})
			m := d.mfaRequired(t, "app", "totp@example.com", "openid email")
			r = d.mfaGrant(t, "app", grantMFARecovery, m["mfa_token"].(string), "recovery_code", codes[0]).ExpectStatus(http.StatusOK).Map()
			tokens = append(tokens, issued{"mfa-recovery-code", r["id_token"].(string), r["access_token"].(string)})

			verifier := prov.Verifier(&oidc.Config{ClientID: "app", SupportedSigningAlgs: []string{alg}})
			for _, tk := range tokens {
				id, err := verifier.Verify(ctx, tk.id)
				if err != nil {
					t.Errorf("%s: go-oidc Verify: %v", tk.grant, err)
				} else if err := id.VerifyAccessToken(tk.access); err != nil {
					t.Errorf("%s: go-oidc VerifyAccessToken (at_hash): %v", tk.grant, err)
				}
				if _, err := jwt.Parse([]byte(tk.id), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithIssuer(iss),
					jwt.WithAudience("app")); err != nil {
					t.Errorf("%s: jwx on the id token: %v", tk.grant, err)
				}
				if _, err := jwt.Parse([]byte(tk.access), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithIssuer(iss),
					jwt.WithAudience("api"), jwt.WithRequiredClaim("jti"), jwt.WithRequiredClaim("client_id")); err != nil {
					t.Errorf("%s: jwx on the access token: %v", tk.grant, err)
				}
				msg, err := jws.Parse([]byte(tk.access))
				if err != nil {
					t.Errorf("%s: jws.Parse on the access token: %v", tk.grant, err)
					continue
				}
				if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != "at+jwt" {
					t.Errorf("%s: access token typ %q, want at+jwt", tk.grant, typ)
				}
			}
		})
	}
}
