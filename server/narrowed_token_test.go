package server_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// What a write made with a token gives away never exceeds what the token
// holds (accounts' passablePermissions, roleWithinToken): a machine user's
// roles, a role grant, an invite's role, a machine key's scopes, a
// client's scopes, issuer audience and first-party status.
// The demo policy's super_admin (root) holds every permission; each token
// below is root's, narrowed by the scope it asked for.

// narrowedRoot is root's token through "web" asking for scope.
func (e *keyEnv) narrowedRoot(t *testing.T, scope string) string {
	t.Helper()
	tok := e.c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", keyRootPass, scope), st.Basic("web", e.web)).Token().AccessToken
	if got := decodeClaims(t, tok)["scope"]; got != scope {
		t.Fatalf("the narrowed token has scope %v, want %q", got, scope)
	}
	return tok
}

// wantInsufficientScope checks the answer of a token lacking perm: 403
// insufficient_scope whose Bearer challenge names perm (RFC 6750 §3.1),
// as a route's permission check answers.
func wantInsufficientScope(t *testing.T, resp *st.Response, perm string) {
	t.Helper()
	resp.ExpectError(http.StatusForbidden, "insufficient_scope")
	if h := resp.Header.Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, `scope="`+perm+`"`) {
		t.Fatalf("WWW-Authenticate %q, want the challenge naming %s", h, perm)
	}
}

// TestMachineKeyWithinItsToken is the review's path, end to end: root's
// token narrowed to users:read users:write, which may not rotate the
// signing keys, makes no machine super_admin (403 insufficient_scope
// naming roles:assign, as POST /admin/users/{id}/roles answers) and, for a
// machine super_admin made with a full token, no key holding keys:rotate
// (400 invalid_scope, the own key's answer). A full token still makes
// both, and that key, exchanged through the built-in client, rotates.
// Fails before the change: the narrowed token made the machine and its
// key, and the key rotated the signing keys.
func TestMachineKeyWithinItsToken(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			narrowed := e.narrowedRoot(t, "users:read users:write")
			e.c.PostJSON("/admin/keys/rotate", map[string]any{"force": true}, st.Bearer(narrowed)).ExpectError(http.StatusForbidden, "insufficient_scope")

			var bot, full struct {
				ID string `json:"id"`
			}
			superBot := map[string]any{"kind": "machine", "name": "bot", "roles": []string{"super_admin"}}
			if resp := e.c.PostJSON("/admin/users", superBot, st.Bearer(narrowed)); resp.StatusCode == http.StatusCreated {
				t.Errorf("a token without roles:assign made a machine super_admin")
				resp.JSON(&bot)
			} else {
				wantInsufficientScope(t, resp, "roles:assign")
			}
			e.c.PostJSON("/admin/users", superBot, st.Bearer(e.rootTok)).ExpectStatus(http.StatusCreated).JSON(&full)
			adminKey := map[string]any{"name": "k", "scopes": []string{"keys:rotate", "roles:assign"}}
			for _, id := range []string{bot.ID, full.ID} {
				if id == "" {
					continue
				}
				resp := e.c.PostJSON("/admin/users/"+id+"/api-keys", adminKey, st.Bearer(narrowed))
				if resp.StatusCode != http.StatusCreated {
					resp.ExpectError(http.StatusBadRequest, "invalid_scope")
					continue
				}
				t.Errorf("a users:read users:write token made a machine key holding keys:rotate")
				var k createdKey
				resp.JSON(&k)
				if r := e.c.PostJSON("/admin/keys/rotate", map[string]any{"force": true}, st.Bearer(e.exchangeThroughBuiltIn(t, k.Key))); r.StatusCode == http.StatusOK {
					t.Errorf("a users:read users:write token ended up rotating the signing keys through a machine key")
				}
			}

			// A full token still makes the key, and it rotates.
			k := e.createKey(t, "/admin/users/"+full.ID+"/api-keys", e.rootTok, adminKey)
			e.c.PostJSON("/admin/keys/rotate", map[string]any{"force": true}, st.Bearer(e.exchangeThroughBuiltIn(t, k.Key))).ExpectStatus(http.StatusOK)
		})
	}
}

// TestNarrowedTokenGivesAwayNoMore: every write that gives something away
// is bounded by the token making it, refusing beyond it and allowing
// within it and with a full token.
//
//   - A machine user's roles: giving any needs roles:assign in the token
//     (403 insufficient_scope naming it, as POST /admin/users/{id}/roles
//     answers, which is checked beside it); with it, the role grant's own
//     rule (the rank: an admin may not give admin) decides, as it does for
//     a grant. A machine made bare needs only users:write. Each role given
//     at creation is audited role.granted, as a grant is.
//   - A machine's key (the machine holds super_admin): its scopes must be
//     in the token's scope, else 400 invalid_scope, and nothing is made.
//   - A role grant and an invite's role (and a machine's roles, with
//     roles:assign): of the role's permissions, those root holds must be
//     in the token (403 insufficient_scope naming the first missing).
//   - A client made with root's token narrowed to clients:write: no scope
//     the token lacks, no issuer audience, not first-party (403
//     forbidden, the ceiling's answer).
//
// Fails before the change: the narrowed tokens made machine users with
// roles, keys with keys:rotate and clients with admin scopes, the issuer
// audience and first-party status.
func TestNarrowedTokenGivesAwayNoMore(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			usersRW := e.narrowedRoot(t, "users:read users:write")
			assign := e.narrowedRoot(t, "roles:assign users:read users:write")
			assignViewer := e.narrowedRoot(t, "projects:read roles:assign users:read users:write")
			clientsW := e.narrowedRoot(t, "clients:write")

			type user struct {
				ID    string   `json:"id"`
				Roles []string `json:"roles"`
			}
			// machine asks, in test t, for a machine user with roles.
			machine := func(t *testing.T, tok string, roles ...string) *st.Response {
				body := map[string]any{"kind": "machine", "name": "bot"}
				if roles != nil {
					body["roles"] = roles
				}
				return e.in.Client(t).PostJSON("/admin/users", body, st.Bearer(tok))
			}
			t.Run("machine_roles", func(t *testing.T) {
				for _, tc := range []struct {
					name    string
					tok     string
					roles   []string
					status  int
					code    string // "" for 201
					missing string // the permission an insufficient_scope names
				}{
					{"fail/users_write_gives_super_admin", usersRW, []string{"super_admin"}, 403, "insufficient_scope", "roles:assign"},
					{"fail/users_write_gives_a_low_role", usersRW, []string{"viewer"}, 403, "insufficient_scope", "roles:assign"},
					{"fail/users_write_gives_an_unknown_role", usersRW, []string{"no_such_role"}, 403, "insufficient_scope", "roles:assign"},
					{"fail/roles_assign_within_the_rank_only", e.admTok, []string{"admin"}, 403, "forbidden", ""},
					// The role's permissions root holds must be in the token too.
					{"fail/roles_assign_gives_super_admin", assign, []string{"super_admin"}, 403, "insufficient_scope", "audit:read"},
					{"fail/roles_assign_gives_viewer", assign, []string{"viewer"}, 403, "insufficient_scope", "projects:read"},
					{"ok/users_write_makes_a_bare_machine", usersRW, nil, 201, "", ""},
					{"ok/roles_assign_gives_a_role_within", assignViewer, []string{"viewer"}, 201, "", ""},
					{"ok/full_token_gives_roles", e.rootTok, []string{"admin", "editor"}, 201, "", ""},
				} {
					t.Run(tc.name, func(t *testing.T) {
						resp := machine(t, tc.tok, tc.roles...)
						switch {
						case tc.code == "insufficient_scope":
							wantInsufficientScope(t, resp, tc.missing)
							return
						case tc.code != "":
							resp.ExpectError(tc.status, tc.code)
							return
						}
						var u user
						resp.ExpectStatus(http.StatusCreated).JSON(&u)
						if !slices.Equal(u.Roles, tc.roles) && !(tc.roles == nil && len(u.Roles) == 0) {
							t.Fatalf("roles %v, want %v", u.Roles, tc.roles)
						}
						if !e.audited(t, "user.created", u.ID, nil) {
							t.Fatal("no user.created event")
						}
						for _, role := range tc.roles {
							if !e.audited(t, "role.granted", u.ID, map[string]string{"role": role}) {
								t.Fatalf("no role.granted event for %s", role)
							}
						}
						if tc.roles == nil && e.audited(t, "role.granted", u.ID, nil) {
							t.Fatal("a bare machine has a role.granted event")
						}
						if tc.roles != nil {
							return
						}
						// Both paths to a machine's roles agree: the grant
						// route answers the users:write token as creation did.
						wantInsufficientScope(t, e.in.Client(t).PostJSON("/admin/users/"+u.ID+"/roles", map[string]string{"role": "viewer"}, st.Bearer(usersRW)), "roles:assign")
					})
				}
				// The refused requests made no machine user.
				page := e.in.Client(t).Get("/admin/users?q=bot", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK).Map()
				if items, _ := page["items"].([]any); len(items) != 3 {
					t.Fatalf("%d machine users made, want the 3 allowed: %v", len(items), page)
				}
			})

			// A role grant, a new member's role and an invite follow the
			// same rule as a machine's roles: of the role's permissions,
			// those root holds must be in the token.
			t.Run("grants_and_invites", func(t *testing.T) {
				grantee := e.fx.User(t, "grantee@example.com", keyAnnPass, "viewer")
				invite := e.narrowedRoot(t, "users:invite")
				inviteViewer := e.narrowedRoot(t, "projects:read users:invite")
				c := e.in.Client(t)
				grant := func(tok, role string) *st.Response {
					return c.PostJSON("/admin/users/"+grantee.ID+"/roles", map[string]string{"role": role}, st.Bearer(tok))
				}
				inv := func(tok, addr, role string) *st.Response {
					return c.PostJSON("/admin/invites", map[string]string{"email": addr, "role": role}, st.Bearer(tok))
				}
				wantInsufficientScope(t, grant(assign, "super_admin"), "audit:read")
				wantInsufficientScope(t, grant(assign, "editor"), "projects:read")
				wantInsufficientScope(t, inv(invite, "boss@example.org", "super_admin"), "audit:read")
				wantInsufficientScope(t, inv(invite, "viewer@example.org", "viewer"), "projects:read")
				if u, err := e.in.App.Core.Store.GetUser(context.Background(), grantee.ID); err != nil || !slices.Equal(u.Roles, []string{"viewer"}) {
					t.Fatalf("the refused grants changed the roles to %v (%v)", u.Roles, err)
				}
				page := c.Get("/admin/invites", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK).Map()
				if items, _ := page["items"].([]any); len(items) != 0 {
					t.Fatalf("the refused invites left %v", items)
				}
				inv(inviteViewer, "viewer@example.org", "viewer").ExpectStatus(http.StatusCreated)
				inv(e.rootTok, "boss@example.org", "super_admin").ExpectStatus(http.StatusCreated)
				grant(e.rootTok, "super_admin").ExpectStatus(http.StatusOK)
			})

			t.Run("machine_key", func(t *testing.T) {
				var boss user
				machine(t, e.rootTok, "super_admin").ExpectStatus(http.StatusCreated).JSON(&boss)
				path := "/admin/users/" + boss.ID + "/api-keys"
				for _, tc := range []struct {
					name   string
					tok    string
					scopes []string
					code   string // "" for 201
				}{
					{"fail/users_write_makes_keys_rotate", usersRW, []string{"keys:rotate", "roles:assign"}, "invalid_scope"},
					{"fail/users_write_makes_one_more", usersRW, []string{"users:read", "roles:assign"}, "invalid_scope"},
					{"fail/roles_assign_makes_keys_rotate", assign, []string{"keys:rotate"}, "invalid_scope"},
					{"fail/users_write_makes_a_project_key", usersRW, []string{"projects:read"}, "invalid_scope"},
					{"ok/users_write_within", usersRW, []string{"users:read"}, ""},
					{"ok/roles_assign_within", assign, []string{"roles:assign", "users:write"}, ""},
					{"ok/full_token", e.rootTok, []string{"keys:rotate", "roles:assign"}, ""},
				} {
					t.Run(tc.name, func(t *testing.T) {
						resp := e.in.Client(t).PostJSON(path, map[string]any{"name": tc.name, "scopes": tc.scopes}, st.Bearer(tc.tok))
						if tc.code != "" {
							resp.ExpectError(http.StatusBadRequest, tc.code)
							return
						}
						var k createdKey
						resp.ExpectStatus(http.StatusCreated).JSON(&k)
						if !slices.Equal(k.Scopes, tc.scopes) {
							t.Fatalf("scopes %v, want %v", k.Scopes, tc.scopes)
						}
					})
				}
				var list struct{ Items []createdKey }
				e.in.Client(t).Get(path, st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK).JSON(&list)
				if len(list.Items) != 3 {
					t.Fatalf("the machine holds %d keys, want the 3 made within their tokens: %+v", len(list.Items), list.Items)
				}
			})

			t.Run("client", func(t *testing.T) {
				cc := []string{"client_credentials"}
				for _, tc := range []struct {
					name   string
					tok    string
					body   map[string]any
					status int
				}{
					{"fail/admin_scopes", clientsW, map[string]any{"grants": cc, "scopes": []string{"keys:rotate", "roles:assign"}}, 403},
					{"fail/a_scope_the_token_lacks", clientsW, map[string]any{"grants": cc, "scopes": []string{"projects:read"}}, 403},
					{"fail/issuer_audience", clientsW, map[string]any{"grants": cc, "scopes": []string{}, "audiences": []string{e.fx.Issuer()}}, 403},
					{"fail/first_party", clientsW, map[string]any{"grants": []string{"authorization_code"},
						"redirect_uris": []string{"https://app.example/cb"}, "first_party": true}, 403},
					{"ok/within_the_token", clientsW, map[string]any{"grants": cc, "scopes": []string{"clients:write"}}, 201},
					{"ok/full_token", e.rootTok, map[string]any{"grants": cc, "scopes": []string{"keys:rotate", "roles:assign"},
						"audiences": []string{e.fx.Issuer()}}, 201},
					{"ok/full_token_first_party", e.rootTok, map[string]any{"grants": []string{"authorization_code"},
						"redirect_uris": []string{"https://app.example/cb"}, "first_party": true}, 201},
				} {
					t.Run(tc.name, func(t *testing.T) {
						id := strings.NewReplacer("/", "-", "_", "-").Replace(tc.name)
						tc.body["client_id"], tc.body["name"] = id, tc.name
						c := e.in.Client(t)
						resp := c.PostJSON("/admin/clients", tc.body, st.Bearer(tc.tok))
						if tc.status != http.StatusCreated {
							resp.ExpectError(tc.status, "forbidden")
							c.Delete("/admin/clients/"+id, st.Bearer(e.rootTok)).ExpectError(http.StatusNotFound, "not_found")
							return
						}
						resp.ExpectStatus(http.StatusCreated)
					})
				}
			})
		})
	}
}
