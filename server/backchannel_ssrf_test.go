package server_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestOrganisationBackchannelURINamesAHost: an organisation's admin may not
// register a back-channel logout URI that makes Portcullis POST into its
// own network: an IP literal (loopback, private, link-local, or any) or a
// loopback name is 400 invalid_request and nothing is stored; a named https
// host is accepted (what it resolves to is checked at each delivery). A
// platform admin keeps loopback http (the contract's, for development).
func TestOrganisationBackchannelURINamesAHost(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := demoPolicyEnv(t, backend)
			a := e.createTenant(t, "acme")
			e.member(t, a, "admin-a@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			for i, tc := range []struct {
				name, tok, uri string
				want           int
			}{
				{"fail/org admin: local Redis over loopback http", tokA, "http://127.0.0.1:6379/", http.StatusBadRequest},
				{"fail/org admin: loopback IPv6", tokA, "http://[::1]:9090/debug/pprof/profile", http.StatusBadRequest},
				{"fail/org admin: cloud metadata", tokA, "https://169.254.169.254/latest/api/token", http.StatusBadRequest},
				{"fail/org admin: private address", tokA, "https://10.0.0.5:5432/x", http.StatusBadRequest},
				{"fail/org admin: unique local IPv6", tokA, "https://[fd00::1]/x", http.StatusBadRequest},
				{"fail/org admin: a public IP literal", tokA, "https://93.184.216.34/bcl", http.StatusBadRequest},
				{"fail/org admin: localhost", tokA, "https://localhost:8443/bcl", http.StatusBadRequest},
				{"fail/org admin: localhost, absolute", tokA, "https://LOCALHOST./bcl", http.StatusBadRequest},
				{"fail/org admin: a name under localhost", tokA, "https://app.localhost/bcl", http.StatusBadRequest},
				{"ok/org admin: a named host", tokA, "https://rp.acme.example/backchannel-logout", http.StatusCreated},
				{"ok/platform admin: loopback http", e.rootTok, "http://127.0.0.1:6379/", http.StatusCreated},
				{"ok/platform admin: a private address", e.rootTok, "https://10.0.0.5/bcl", http.StatusCreated},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id := fmt.Sprintf("bcl-uri-%d", i)
					body := map[string]any{"client_id": id, "name": id, "grants": []string{"authorization_code"},
						"redirect_uris": []string{"https://app.example/cb"}, "backchannel_logout_uri": tc.uri}
					resp := e.in.Client(t).PostJSON("/admin/clients", body, st.Bearer(tc.tok))
					c, err := e.in.App.Core.Store.GetClient(t.Context(), id)
					if tc.want != http.StatusCreated {
						resp.ExpectError(tc.want, "invalid_request")
						if !errors.Is(err, store.ErrNotFound) {
							t.Fatalf("refused client %s stored: %v", id, err)
						}
						return
					}
					resp.ExpectStatus(tc.want)
					if err != nil || c.BackchannelLogoutURI != tc.uri {
						t.Fatalf("client %s stored as %+v, %v; want its back-channel URI %s", id, c, err, tc.uri)
					}
				})
			}
		})
	}
}
