package signout_test

import (
	"testing"

	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/store"
)

func TestDecideLogout(t *testing.T) {
	t.Parallel()
	client := &store.Client{ID: "web", PostLogoutRedirectURIs: []string{"https://app.example/bye", "http://127.0.0.1/done"}}
	session := &store.BrowserSession{ID: "bs", UserID: "u1", Grants: []store.SessionGrant{{SID: "g1", ClientID: "web"}}}
	hint := &signout.Hint{Subject: "u1", Audience: []string{"web"}, SID: "g1"}
	const uri = "https://app.example/bye"
	tests := []struct {
		name     string
		in       signout.LogoutInputs
		action   signout.LogoutAction
		redirect string
	}{
		{"valid hint and registered URI: out at once, redirect with state",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri, State: "s 1"},
				Hint: hint, Client: client, Session: session}, signout.LogoutNow, uri + "?state=s+1"},
		{"valid hint, client_id and URI, no state: redirect without state",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", ClientID: "web", PostLogoutRedirectURI: uri},
				Hint: hint, Client: client, Session: session}, signout.LogoutNow, uri},
		{"valid hint without URI: out at once, signed-out page",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h"}, Hint: hint, Client: client, Session: session},
			signout.LogoutNow, ""},
		{"valid hint, no session: nothing to end, redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri}, Hint: hint, Client: client},
			signout.LogoutNow, uri},
		{"loopback URI on another port",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: "http://127.0.0.1:5000/done"},
				Hint: hint, Client: client, Session: session}, signout.LogoutNow, "http://127.0.0.1:5000/done"},
		{"loopback URI with a bare fragment: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: "http://127.0.0.1:5000/done#"},
				Hint: hint, Client: client, Session: session}, signout.LogoutConfirm, ""},
		{"loopback URI with the scheme in upper case: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: "HTTP://127.0.0.1:5000/done"},
				Hint: hint, Client: client, Session: session}, signout.LogoutConfirm, ""},
		{"client_id only and registered URI: confirm, then redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{ClientID: "web", PostLogoutRedirectURI: uri, State: "x"},
				Client: client, Session: session}, signout.LogoutConfirm, uri + "?state=x"},
		{"unregistered URI: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: "https://evil.example/"},
				Hint: hint, Client: client, Session: session}, signout.LogoutConfirm, ""},
		{"registered URI with an added query: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri + "?foo=bar"},
				Hint: hint, Client: client, Session: session}, signout.LogoutConfirm, ""},
		{"forged or foreign hint: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri}, HintInvalid: true,
				Client: client, Session: session}, signout.LogoutConfirm, ""},
		{"hint aud disagrees with client_id: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", ClientID: "other", PostLogoutRedirectURI: uri},
				Hint: hint, Client: &store.Client{ID: "other", PostLogoutRedirectURIs: []string{uri}}, Session: session},
			signout.LogoutConfirm, ""},
		{"URI with no known client: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{PostLogoutRedirectURI: uri}, Session: session}, signout.LogoutConfirm, ""},
		{"no parameters: confirm",
			signout.LogoutInputs{Session: session}, signout.LogoutConfirm, ""},
		{"only state: confirm, never redirect",
			signout.LogoutInputs{Request: signout.LogoutRequest{State: "s"}, Session: session}, signout.LogoutConfirm, ""},
		{"hint of another person: confirm before ending this session",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri},
				Hint: &signout.Hint{Subject: "u2", Audience: []string{"web"}, SID: "g1"}, Client: client, Session: session},
			signout.LogoutConfirm, uri},
		{"hint of an earlier session of the same person: confirm",
			signout.LogoutInputs{Request: signout.LogoutRequest{IDTokenHint: "h", PostLogoutRedirectURI: uri},
				Hint: &signout.Hint{Subject: "u1", Audience: []string{"web"}, SID: "old"}, Client: client, Session: session},
			signout.LogoutConfirm, uri},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := signout.DecideLogout(tc.in)
			if d.Action != tc.action || d.RedirectURI != tc.redirect {
				t.Fatalf("DecideLogout = %+v, want action %v redirect %q", d, tc.action, tc.redirect)
			}
		})
	}
}
