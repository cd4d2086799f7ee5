package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		bad  string // for fail cases: the offending token ("" for the whole parameter)
	}{
		{"ok/empty", "", []string{}, ""},
		{"ok/only spaces", "   ", []string{}, ""},
		{"ok/single", "openid", []string{"openid"}, ""},
		{"ok/several", "openid projects:read offline_access", []string{"openid", "projects:read", "offline_access"}, ""},
		{"ok/extra spaces are ignored", "  openid   projects:read ", []string{"openid", "projects:read"}, ""},
		{"ok/duplicates are dropped", "a:b openid a:b", []string{"a:b", "openid"}, ""},
		{"ok/every NQCHAR", "!#[]~", []string{"!#[]~"}, ""},
		{"fail/tab", "openid\tprofile", nil, "openid\tprofile"},
		{"fail/newline", "openid\n", nil, "openid\n"},
		{"fail/nul", "a\x00b", nil, "a\x00b"},
		{"fail/quote", `say"hi"`, nil, `say"hi"`},
		{"fail/backslash", `a\b`, nil, `a\b`},
		{"fail/non-ascii", "café", nil, "café"},
		{"fail/del", "a\x7f", nil, "a\x7f"},
		{"fail/too long", strings.Repeat("a", MaxScopeLength+1), nil, ""},
		{"fail/too many", manyScopes(MaxScopeTokens + 1), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScope(tt.in)
			if tt.want != nil {
				if err != nil || !slices.Equal(got, tt.want) {
					t.Fatalf("ParseScope(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			var se *ScopeError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidScope) {
				t.Fatalf("ParseScope(%q) = %q, %v; want a *ScopeError", tt.in, got, err)
			}
			if se.Scope != tt.bad {
				t.Fatalf("offending scope %q, want %q", se.Scope, tt.bad)
			}
		})
	}
}

func manyScopes(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("s%d:read", i)
	}
	return strings.Join(parts, " ")
}

var (
	editorPerms = []string{"projects:read", "projects:write"}
	viewerPerms = []string{"projects:read"}
)

func TestResolveScope(t *testing.T) {
	tests := []struct {
		name      string
		requested string
		user      []string
		client    []string
		perms     []string
		oidc      []string
		bad       string // offending scope for fail cases
	}{
		{"ok/nothing requested gives every user permission", "", editorPerms, nil, editorPerms, []string{}, ""},
		{"ok/only oidc scopes give every user permission", "offline_access openid", editorPerms, nil, editorPerms, []string{"openid", "offline_access"}, ""},
		{"ok/client restricts the default", "openid", editorPerms, []string{"projects:read"}, viewerPerms, []string{"openid"}, ""},
		{"ok/client wildcard", "", append([]string{"users:read"}, editorPerms...), []string{"projects:*"}, editorPerms, []string{}, ""},
		{"ok/client with no scopes gets no permission", "openid", editorPerms, []string{}, []string{}, []string{"openid"}, ""},
		{"ok/named permissions are exactly granted", "projects:read", editorPerms, nil, viewerPerms, []string{}, ""},
		{"ok/oidc order is canonical", "email offline_access profile openid", nil, nil, []string{}, []string{"openid", "profile", "email", "offline_access"}, ""},
		{"ok/user without permissions", "openid", nil, nil, []string{}, []string{"openid"}, ""},
		{"ok/wildcards in user permissions never reach the token", "", []string{"*", "projects:*", "projects:read"}, nil, viewerPerms, []string{}, ""},
		{"fail/a wildcard in user permissions is not honoured", "projects:write", []string{"*", "projects:*"}, nil, nil, nil, "projects:write"},
		{"fail/user lacks the permission", "projects:write", viewerPerms, nil, nil, nil, "projects:write"},
		{"fail/client may not receive it", "projects:write", editorPerms, []string{"projects:read"}, nil, nil, "projects:write"},
		{"fail/first offender is named", "openid projects:read projects:delete projects:write", viewerPerms, nil, nil, nil, "projects:delete"},
		{"fail/unknown scope", "openid phone", editorPerms, nil, nil, nil, "phone"},
		{"fail/wildcard requested", "projects:*", editorPerms, nil, nil, nil, "projects:*"},
		{"fail/star requested", "*", editorPerms, nil, nil, nil, "*"},
		{"fail/malformed", "Projects:Read", editorPerms, nil, nil, nil, "Projects:Read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseScope(tt.requested)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ResolveScope(req, tt.user, tt.client)
			checkGrant(t, g, err, tt.perms, tt.oidc, tt.bad)
		})
	}
}

func checkGrant(t *testing.T, g ScopeGrant, err error, perms, oidc []string, bad string) {
	t.Helper()
	if perms == nil {
		var se *ScopeError
		if !errors.As(err, &se) || !errors.Is(err, ErrInvalidScope) {
			t.Fatalf("got %+v, %v; want a *ScopeError", g, err)
		}
		if se.Scope != bad || !strings.Contains(err.Error(), bad) {
			t.Fatalf("error %q names %q, want %q", err, se.Scope, bad)
		}
		return
	}
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if g.Permissions == nil || g.OIDC == nil {
		t.Fatalf("grant has nil lists: %#v", g)
	}
	if !slices.Equal(g.Permissions, perms) || !slices.Equal(g.OIDC, oidc) {
		t.Fatalf("grant = %v / %v, want %v / %v", g.Permissions, g.OIDC, perms, oidc)
	}
	for _, p := range g.Permissions {
		if strings.Contains(p, "*") {
			t.Fatalf("grant holds a wildcard: %v", g.Permissions)
		}
	}
}

func TestScopeGrantFormatting(t *testing.T) {
	g := ScopeGrant{Permissions: []string{"a:b", "c:d"}, OIDC: []string{"openid"}}
	if got := g.String(); got != "openid a:b c:d" {
		t.Fatalf("String = %q", got)
	}
	if !g.Has("openid") || !g.Has("c:d") || g.Has("profile") {
		t.Fatal("Has is wrong")
	}
	s := g.Scopes()
	s[0] = "x"
	if g.OIDC[0] != "openid" {
		t.Fatal("Scopes aliases OIDC")
	}
	if (ScopeGrant{Permissions: []string{}, OIDC: []string{}}).String() != "" {
		t.Fatal("empty grant is not empty")
	}
	if !slices.Equal(OIDCScopes(), []string{"openid", "profile", "email", "offline_access"}) || !IsOIDCScope("email") || IsOIDCScope("phone") {
		t.Fatal("OIDC scopes wrong")
	}
}

func TestResolveRestrictedScope(t *testing.T) {
	tests := []struct {
		name      string
		requested string
		oidc      []string
		bad       string
	}{
		{"ok/permissions are dropped, not refused", "openid projects:write users:read", []string{"openid"}, ""},
		{"ok/no offline_access without a refresh token", "openid offline_access profile", []string{"openid", "profile"}, ""},
		{"ok/nothing", "", []string{}, ""},
		{"fail/malformed scope still refused", "openid bogus", nil, "bogus"},
		{"fail/wildcard still refused", "*", nil, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseScope(tt.requested)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ResolveRestrictedScope(req)
			var perms []string
			if tt.oidc != nil {
				perms = []string{}
			}
			checkGrant(t, g, err, perms, tt.oidc, tt.bad)
		})
	}
}

func TestNarrowOnRefresh(t *testing.T) {
	adminPerms := append([]string{"users:read"}, editorPerms...)
	tests := []struct {
		name    string
		session string // scope the session was first requested with
		now     string // scope of the refresh request
		user    []string
		client  []string
		perms   []string
		oidc    []string
		bad     string
	}{
		{"ok/unnamed session follows a new role", "openid offline_access", "", adminPerms, nil, []string{"projects:read", "projects:write", "users:read"}, []string{"openid", "offline_access"}, ""},
		{"ok/unnamed session follows a removed role", "openid", "", viewerPerms, nil, viewerPerms, []string{"openid"}, ""},
		{"ok/unnamed session still bounded by the client", "", "", adminPerms, []string{"projects:read"}, viewerPerms, []string{}, ""},
		{"ok/named session never gains more", "projects:read", "", adminPerms, nil, viewerPerms, []string{}, ""},
		{"ok/named session loses what the user lost", "projects:read projects:write", "", viewerPerms, nil, viewerPerms, []string{}, ""},
		{"ok/named session loses what the client lost", "projects:read projects:write", "", editorPerms, []string{"projects:write"}, []string{"projects:write"}, []string{}, ""},
		{"ok/narrowing a named session", "projects:read projects:write openid", "projects:read", editorPerms, nil, viewerPerms, []string{}, ""},
		{"ok/narrowing an unnamed session", "openid offline_access", "openid projects:write", editorPerms, nil, []string{"projects:write"}, []string{"openid"}, ""},
		{"ok/only oidc asked now keeps the session's permissions", "openid offline_access projects:read", "openid", editorPerms, nil, viewerPerms, []string{"openid"}, ""},
		{"fail/widening a named session", "projects:read", "projects:write", editorPerms, nil, nil, nil, "projects:write"},
		{"fail/widening oidc", "openid", "openid email", editorPerms, nil, nil, nil, "email"},
		{"fail/asking for a permission the user lost", "", "projects:write", viewerPerms, nil, nil, nil, "projects:write"},
		{"fail/asking for a permission the client may not receive", "", "projects:write", editorPerms, []string{"projects:read"}, nil, nil, "projects:write"},
		{"fail/wildcard asked now", "", "projects:*", editorPerms, nil, nil, nil, "projects:*"},
		{"fail/malformed now", "", "nope", editorPerms, nil, nil, nil, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			session, err := ParseScope(tt.session)
			if err != nil {
				t.Fatal(err)
			}
			now, err := ParseScope(tt.now)
			if err != nil {
				t.Fatal(err)
			}
			g, err := NarrowOnRefresh(session, now, tt.user, tt.client)
			checkGrant(t, g, err, tt.perms, tt.oidc, tt.bad)
		})
	}
}

func TestKeepToGranted(t *testing.T) {
	tests := []struct {
		name    string
		grant   []string // NarrowOnRefresh's permissions
		now     string   // scope of the refresh request
		granted string   // the session's login grant
		perms   []string
		bad     string
	}{
		{"ok/a login that granted none keeps none", editorPerms, "", "openid", []string{}, ""},
		{"ok/a role gained since the login stays out", append([]string{"users:read"}, viewerPerms...), "", "projects:read openid", viewerPerms, ""},
		{"ok/a permission lost since the login stays lost", []string{}, "", "projects:read projects:write", []string{}, ""},
		{"ok/narrowing within the grant", viewerPerms, "openid projects:read", "projects:read projects:write openid", viewerPerms, ""},
		{"fail/naming a permission the login did not grant", []string{"projects:write"}, "projects:write", "projects:read openid", nil, "projects:write"},
		{"fail/naming one beside a granted one", editorPerms, "projects:read projects:write", "projects:read", nil, "projects:write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now, err := ParseScope(tt.now)
			if err != nil {
				t.Fatal(err)
			}
			g, err := KeepToGranted(ScopeGrant{Permissions: slices.Clone(tt.grant), OIDC: []string{}}, now, strings.Fields(tt.granted))
			checkGrant(t, g, err, tt.perms, []string{}, tt.bad)
		})
	}
}

func TestResolveClientScope(t *testing.T) {
	tests := []struct {
		name      string
		requested string
		client    []string
		perms     []string
		bad       string
	}{
		{"ok/nothing requested gives every client scope", "", []string{"reports:read", "reports:write"}, []string{"reports:read", "reports:write"}, ""},
		{"ok/no client scopes give nothing", "", nil, []string{}, ""},
		{"ok/wildcard client scopes are never granted on their own", "", []string{"reports:*"}, []string{}, ""},
		{"ok/named", "reports:read", []string{"reports:read", "reports:write"}, []string{"reports:read"}, ""},
		{"ok/named under a wildcard", "reports:read", []string{"reports:*"}, []string{"reports:read"}, ""},
		{"fail/not listed", "reports:delete", []string{"reports:read"}, nil, "reports:delete"},
		{"fail/client without scopes", "reports:read", nil, nil, "reports:read"},
		{"fail/oidc needs a user", "openid", []string{"reports:read"}, nil, "openid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseScope(tt.requested)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ResolveClientScope(req, tt.client)
			var oidc []string
			if tt.perms != nil {
				oidc = []string{}
			}
			checkGrant(t, g, err, tt.perms, oidc, tt.bad)
		})
	}
}

func TestExpand(t *testing.T) {
	p := mustParse(t, inheritancePolicy)
	tests := []struct {
		name     string
		patterns []string
		want     []string
		fail     string
	}{
		{"ok/concrete", []string{"docs:read"}, []string{"docs:read"}, ""},
		{"ok/resource wildcard", []string{"billing:*", "docs:read"}, []string{"billing:pay", "billing:read", "docs:read"}, ""},
		{"ok/admin resource", []string{"keys:*"}, []string{"keys:read", "keys:rotate"}, ""},
		{"ok/none", nil, []string{}, ""},
		{"fail/unknown permission", []string{"docs:shred"}, nil, "not known"},
		{"fail/wildcard matching nothing", []string{"ships:*"}, nil, "matches no permission"},
		{"fail/malformed", []string{"docs"}, nil, "resource:action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Expand(tt.patterns)
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("Expand(%v) = %v, %v; want error containing %q", tt.patterns, got, err, tt.fail)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Expand(%v) = %v, %v; want %v", tt.patterns, got, err, tt.want)
			}
		})
	}
	all, err := p.Expand([]string{"*"})
	if err != nil || !slices.Equal(all, p.AllPermissions()) {
		t.Fatalf("Expand(*) = %v, %v", all, err)
	}
}

// TestScopeErrorText: a valid scope token is named in single quotes (RFC
// 6749 §5.2 allows them in error_description, not the double quote); one
// outside NQCHAR stays Go-quoted, so nothing it carries goes out unescaped.
func TestScopeErrorText(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  ScopeError
		want string
	}{
		{"ok/no scope", ScopeError{Reason: "empty scope"}, "invalid scope: empty scope"},
		{"ok/valid token", ScopeError{Scope: "nothing:here", Reason: "unknown"}, "scope 'nothing:here': unknown"},
		{"ok/token outside NQCHAR", ScopeError{Scope: "caf\u00e9\n", Reason: "bad"}, "scope \"caf\u00e9\\n\": bad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}
