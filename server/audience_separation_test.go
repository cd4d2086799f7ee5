package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestAccessTokenNeverPassesAsAnIDToken: an access token is never accepted
// as an id token by an OpenID client checking it as OIDC Core §3.1.3.7 says
// (go-oidc: signature, iss, aud contains its client_id, exp; typ is not part
// of an id token's validation). RFC 8725 §3.12 asks for mutually exclusive
// validation rules (distinct aud) between kinds of JWT, so an access-token
// audience is never a client id: the admin API refuses with 400
// invalid_request a client listing an existing client's id (its own
// included) among its audiences, and a client whose id is an audience a
// client lists or PORTCULLIS_DEFAULT_AUDIENCE, whichever is created first.
// Then no access token of any client that exists verifies, with go-oidc, as
// an id token of any client, while a real id token does. Found by a review:
// before the change "evil" listing "victim" and a client named "api" were
// created and their access tokens verified as the id tokens of "victim" and
// "api".
func TestAccessTokenNeverPassesAsAnIDToken(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, backend))
			c, fx := in.Client(t), st.NewFixtures(t, in.App.Core)
			fx.User(t, rootEmail, rootPass, "super_admin")
			const alice, alicePass = "alice@example.com", "alice password for tests 1"
			fx.User(t, alice, alicePass)
			secret := fx.AdminClient(t, "console")
			root := c.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), st.Basic("console", secret)).Token().AccessToken

			pw := func(id string, audiences ...string) map[string]any {
				body := map[string]any{"client_id": id, "name": id, "grants": []string{"password"}}
				if audiences != nil {
					body["audiences"] = audiences
				}
				return body
			}
			secrets := map[string]string{}
			create := func(body map[string]any) *st.Response {
				resp := c.PostJSON("/admin/clients", body, st.Bearer(root))
				if resp.StatusCode == http.StatusCreated {
					secrets[body["client_id"].(string)] = resp.Map()["client_secret"].(string)
				}
				return resp
			}
			for _, tc := range []struct {
				name          string
				first, second map[string]any // first is created; second is refused
			}{
				{"fail/audience is an existing client's id", pw("victim"), pw("evil", "victim")},
				{"fail/id is an audience a client lists", pw("evil2", "api2", "victim2"), pw("victim2")},
				{"fail/id is the default audience", nil, pw("api")},
				{"fail/audience is its own id", nil, pw("selfie", "selfie")},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if tc.first != nil {
						create(tc.first).ExpectStatus(http.StatusCreated)
					}
					resp := create(tc.second)
					if resp.StatusCode == http.StatusCreated {
						t.Errorf("client %v created: an access-token audience is a client id", tc.second)
						return
					}
					resp.ExpectError(http.StatusBadRequest, "invalid_request")
				})
			}

			prov, err := oidc.NewProvider(t.Context(), in.Config.Issuer)
			if err != nil {
				t.Fatal(err)
			}
			list, err := in.App.Core.Store.ListClients(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, cl := range list {
				ids = append(ids, cl.ID)
			}
			for _, id := range slices.Sorted(maps.Keys(secrets)) {
				tok := c.PostForm("/oauth2/token", st.PasswordForm(alice, alicePass, "openid"),
					st.Basic(id, secrets[id])).Token()
				// The control: the verifier takes the client's real id token.
				if _, err := prov.Verifier(&oidc.Config{ClientID: id}).Verify(t.Context(), tok.IDToken); err != nil {
					t.Fatalf("the id token of %s does not verify: %v", id, err)
				}
				for _, rp := range ids {
					if idt, err := prov.Verifier(&oidc.Config{ClientID: rp}).Verify(t.Context(), tok.AccessToken); err == nil {
						t.Errorf("an access token of client %q for alice verifies as an id token of client %q (sub %s, aud %v)",
							id, rp, idt.Subject, idt.Audience)
					}
				}
			}
		})
	}
}

// TestClientRegistrationKeepsAudiencesApartFromClientIDs: the rule of
// TestAccessTokenNeverPassesAsAnIDToken at the admin API for a platform
// admin and for an organisation's admin (whose clients share the one space
// of client ids with every other organisation's and the platform's): each
// clash is 400 invalid_request saying why, and nothing is stored; an
// audience that is no client id is created. Found by a review (the
// fail/ cases were created before the change).
func TestClientRegistrationKeepsAudiencesApartFromClientIDs(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := demoPolicyEnv(t, backend)
			acme := e.createTenant(t, "acme")
			e.member(t, acme, "admin-a@example.com", "admin")
			tokA := e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken
			cc := func(id string, audiences ...string) map[string]any {
				return map[string]any{"client_id": id, "name": id, "grants": []string{"client_credentials"}, "audiences": audiences}
			}
			// A platform client, and a platform client whose audience is no client yet.
			e.c.PostJSON("/admin/clients", cc("platform-app"), st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated)
			e.c.PostJSON("/admin/clients", cc("platform-lister", "orders-api"), st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated)
			for _, tc := range []struct {
				name, tok string
				body      map[string]any
				want      int
			}{
				{"fail/platform admin: audience is a client id", e.rootTok, cc("plat-1", "platform-app"), http.StatusBadRequest},
				{"fail/platform admin: audience is the built-in client id", e.rootTok, cc("plat-2", "portcullis"), http.StatusBadRequest},
				{"fail/platform admin: audience is its own id", e.rootTok, cc("plat-3", "plat-3"), http.StatusBadRequest},
				{"fail/platform admin: id is an audience a client lists", e.rootTok, cc("orders-api"), http.StatusBadRequest},
				{"fail/platform admin: id is the default audience", e.rootTok, cc("api"), http.StatusBadRequest},
				{"fail/org admin: audience is a platform client id", tokA, cc("acme-1", "platform-app"), http.StatusBadRequest},
				{"fail/org admin: id is an audience a platform client lists", tokA, cc("orders-api"), http.StatusBadRequest},
				{"fail/org admin: id is the default audience", tokA, cc("api"), http.StatusBadRequest},
				{"ok/org admin: an audience that is no client id", tokA, cc("acme-app", "acme-api"), http.StatusCreated},
				{"fail/platform admin: id is an audience an organisation's client lists", e.rootTok, cc("acme-api"), http.StatusBadRequest},
				{"ok/platform admin: the default audience", e.rootTok, cc("plat-4", "api", "orders-api"), http.StatusCreated},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := e.in.Client(t).PostJSON("/admin/clients", tc.body, st.Bearer(tc.tok))
					id := tc.body["client_id"].(string)
					_, err := e.in.App.Core.Store.GetClient(t.Context(), id)
					if tc.want == http.StatusCreated {
						resp.ExpectStatus(tc.want)
						if err != nil {
							t.Fatalf("client %s not stored: %v", id, err)
						}
						return
					}
					resp.ExpectError(tc.want, "invalid_request")
					if d, _ := resp.Map()["error_description"].(string); !strings.Contains(d, "never") {
						t.Errorf("error_description %q does not say the rule", d)
					}
					if !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("refused client %s stored: %v", id, err)
					}
				})
			}
		})
	}
}

// TestConcurrentClientCreationsNeverClash: "evil" listing "victim" among
// its audiences and "victim" created at the same moment, on two instances
// sharing the database, in many rounds: exactly one of them is created and
// the other refused with invalid_request, so no clash is ever stored. The
// check runs in the creation's transaction under a lock every creation
// takes (a PostgreSQL advisory transaction lock; SQLite serialises writing
// transactions); without the lock both checks pass on PostgreSQL.
func TestConcurrentClientCreationsNeverClash(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, backend)
			inA, inB := st.Start(t, env), st.Start(t, env)
			op := accounts.Operator()
			ctx := t.Context()
			const rounds = 25
			wins := map[string]int{}
			for i := range rounds {
				victim, evil := fmt.Sprintf("victim-%d", i), fmt.Sprintf("evil-%d", i)
				var start, done sync.WaitGroup
				start.Add(1)
				done.Add(2)
				var errVictim, errEvil error
				go func() {
					defer done.Done()
					start.Wait()
					_, errVictim = inA.App.Accounts.CreateClient(ctx, op, clients.Spec{ID: victim})
				}()
				go func() {
					defer done.Done()
					start.Wait()
					_, errEvil = inB.App.Accounts.CreateClient(ctx, op, clients.Spec{ID: evil, Audiences: []string{victim}})
				}()
				start.Done()
				done.Wait()
				switch {
				case errVictim == nil && errors.Is(errEvil, apierr.ErrInvalidRequest):
					wins["victim"]++
				case errEvil == nil && errors.Is(errVictim, apierr.ErrInvalidRequest):
					wins["evil"]++
				default:
					t.Fatalf("round %d: victim %v, evil %v; want exactly one created and the other invalid_request", i, errVictim, errEvil)
				}
			}
			list, err := inA.App.Core.Store.ListClients(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := clients.Clashes(list, []string{inA.Config.DefaultAudience, inA.Config.Issuer}, nil); len(got) > 0 {
				t.Fatalf("clashes stored: %+v", got)
			}
			t.Logf("first created: %v", wins)
		})
	}
}

// TestStartLogsExistingAudienceClashes: clients stored before the rule
// (written here past it, straight to the store) keep working and the
// server starts, logging at Error each clash once with what to change.
func TestStartLogsExistingAudienceClashes(t *testing.T) {
	for _, backend := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, backend)
			first := st.Start(t, env)
			for _, c := range []store.Client{
				{ID: "victim", Name: "victim"},
				{ID: "evil", Name: "evil", Audiences: []string{"victim", "elsewhere"}},
				{ID: "api", Name: "api"},
				{ID: "selfie", Name: "selfie", Audiences: []string{"selfie"}},
				{ID: "fine", Name: "fine", Audiences: []string{"elsewhere"}},
			} {
				if err := first.App.Core.Store.CreateClient(t.Context(), &c, nil); err != nil {
					t.Fatal(err)
				}
			}
			in := st.Start(t, env)
			type line struct {
				Level, Msg, Change string
				ClientID           string `json:"client_id"`
				ListedBy           string `json:"listed_by"`
				Server             string `json:"server_audience"`
			}
			var got []string
			for _, l := range strings.Split(in.Logs.String(), "\n") {
				var ln line
				if json.Unmarshal([]byte(l), &ln) != nil || !strings.Contains(ln.Msg, "access-token audience is a client id") {
					continue
				}
				if ln.Level != "ERROR" || ln.Change == "" {
					t.Errorf("clash logged %q", l)
				}
				got = append(got, ln.ClientID+"<"+ln.ListedBy+ln.Server)
			}
			want := []string{"api<api", "selfie<selfie", "victim<evil"}
			if !slices.Equal(got, want) {
				t.Fatalf("clashes logged %q, want %q; logs:\n%s", got, want, in.Logs.String())
			}
		})
	}
}
