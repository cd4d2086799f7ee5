package storetest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// RunTenantTests runs the conformance suite of store.Tenants. open must
// return a store on a fresh, empty (unmigrated) database for every call.
//
// Besides the documented behaviour it pins: memberships of one tenant never
// show in another's reads (roles, member lists, user lists, invites, audit
// events); memberships go with their user; the move into the default
// tenant happens exactly once, however many callers race, and keeps
// platform roles global.
func RunTenantTests(t *testing.T, open func(t *testing.T) *sqlstore.Store) {
	t.Helper()
	tests := []seededCase{
		{"ok/create_get_list", testTenantRoundTrip},
		{"fail/create_get", testTenantFail},
		{"ok/roles_per_tenant", testTenantRoles},
		{"fail/roles", testTenantRolesFail},
		{"ok/create_user_in_tenant", testTenantCreateUserIn},
		{"fail/create_user_in_tenant_creates_nothing", testTenantCreateUserInFail},
		{"ok/members_list_pages", testTenantMembers},
		{"ok/memberships_go_with_the_user", testTenantMemberDeleted},
		{"ok/invites_audit_clients_carry_the_tenant", testTenantRecords},
		{"ok/default_tenant_moves_assignments_once", testDefaultTenant},
		{"ok/tenant_invite_of_an_existing_account", testTenantInviteExisting},
		{"ok/home_tenant_marks_the_accounts_a_tenant_created", testHomeTenant},
		{"race/default_tenant_once", testDefaultTenantRace},
		{"race/tenant_update_serialises", testTenantUpdateRace},
	}
	runSeeded(t, open, tests)
}

func mustTenant(t *testing.T, s *sqlstore.Store, slug string) store.Tenant {
	t.Helper()
	tn := store.Tenant{Slug: slug, Name: "Tenant " + slug, Active: true}
	if err := s.CreateTenant(rctx(t), &tn); err != nil {
		t.Fatalf("CreateTenant(%s): %v", slug, err)
	}
	return tn
}

func mustGrantTenant(t *testing.T, s *sqlstore.Store, tenantID, userID, role string) {
	t.Helper()
	if _, err := s.GrantTenantRole(rctx(t), tenantID, userID, role); err != nil {
		t.Fatalf("GrantTenantRole(%s, %s): %v", tenantID, role, err)
	}
}

func testTenantRoundTrip(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustTenant(t, s, "acme")
	if a.ID == "" || a.CreatedAt.IsZero() {
		t.Fatalf("CreateTenant filled %+v", a)
	}
	for name, get := range map[string]func() (store.Tenant, error){
		"by_id":   func() (store.Tenant, error) { return s.GetTenant(c, a.ID) },
		"by_slug": func() (store.Tenant, error) { return s.GetTenantBySlug(c, "acme") },
	} {
		got, err := get()
		if err != nil || got.ID != a.ID || got.Slug != "acme" || got.Name != a.Name || !got.Active || !got.CreatedAt.Equal(a.CreatedAt) {
			t.Fatalf("%s: %+v, %v; want %+v", name, got, err, a)
		}
	}
	// An update writes the name and the flag fn leaves, and nothing else.
	upd, err := s.UpdateTenant(c, a.ID, func(x *store.Tenant) error {
		if x.ID != a.ID || x.Name != a.Name || !x.Active {
			t.Errorf("fn was given %+v, want the stored %+v", *x, a)
		}
		x.Name, x.Active, x.ID, x.Slug, x.CreatedAt = "Acme Corporation", false, "ten_other", "ignored", time.Time{}
		return nil
	})
	if err != nil || upd.ID != a.ID || upd.Slug != "acme" || upd.Name != "Acme Corporation" || upd.Active || !upd.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("UpdateTenant = %+v, %v", upd, err)
	}
	if got, err := s.GetTenantBySlug(c, "acme"); err != nil || got != upd {
		t.Fatalf("after UpdateTenant: %+v, %v; want %+v", got, err, upd)
	}
	if _, err := s.UpdateTenant(c, a.ID, func(x *store.Tenant) error { x.Active = true; return nil }); err != nil {
		t.Fatalf("UpdateTenant (on again): %v", err)
	}
	if got, _ := s.GetTenant(c, a.ID); !got.Active || got.Name != "Acme Corporation" {
		t.Fatalf("after turning it on again: %+v", got)
	}
	b := mustTenant(t, s, "globex")
	first, err := s.ListTenants(c, "", 1)
	if err != nil || len(first.Items) != 1 || first.NextCursor == "" {
		t.Fatalf("ListTenants page 1: %+v, %v", first, err)
	}
	second, err := s.ListTenants(c, first.NextCursor, 1)
	if err != nil || len(second.Items) != 1 || second.NextCursor != "" {
		t.Fatalf("ListTenants page 2: %+v, %v", second, err)
	}
	got := []string{first.Items[0].ID, second.Items[0].ID}
	if !slices.Contains(got, a.ID) || !slices.Contains(got, b.ID) {
		t.Fatalf("ListTenants = %v, want both tenants", got)
	}
}

func testTenantFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	mustTenant(t, s, "acme")
	dup := store.Tenant{Slug: "acme", Name: "again", Active: true}
	wantErr(t, "CreateTenant(duplicate slug)", s.CreateTenant(c, &dup), store.ErrAlreadyExists)
	for name, get := range map[string]func() (store.Tenant, error){
		"fail/unknown_id":   func() (store.Tenant, error) { return s.GetTenant(c, "ten_missing") },
		"fail/unknown_slug": func() (store.Tenant, error) { return s.GetTenantBySlug(c, "ACME") },
		"fail/empty_slug":   func() (store.Tenant, error) { return s.GetTenantBySlug(c, "") },
		"fail/nul_slug":     func() (store.Tenant, error) { return s.GetTenantBySlug(c, "a\x00b") },
		"fail/invalid_utf8": func() (store.Tenant, error) { return s.GetTenantBySlug(c, "\xff") },
	} {
		_, err := get()
		wantErr(t, name, err, store.ErrNotFound)
	}
	rename := func(x *store.Tenant) error { x.Name = "x"; return nil }
	for name, id := range map[string]string{"unknown_id": "ten_missing", "no_id": "", "nul_id": "ten_\x00", "invalid_utf8": "\xff"} {
		_, err := s.UpdateTenant(c, id, rename)
		wantErr(t, "UpdateTenant("+name+")", err, store.ErrNotFound)
	}
	// An error of fn is returned as is and writes nothing.
	refused := errors.New("refused")
	a, _ := s.GetTenantBySlug(c, "acme")
	_, err := s.UpdateTenant(c, a.ID, func(x *store.Tenant) error { x.Name, x.Active = "changed", false; return refused })
	wantErr(t, "UpdateTenant(fn refuses)", err, refused)
	if got, _ := s.GetTenant(c, a.ID); got != a {
		t.Fatalf("a refused update wrote %+v over %+v", got, a)
	}
	if _, err := s.ListTenants(c, "garbage", 0); !errors.Is(err, sqlstore.ErrInvalidCursor) {
		t.Fatalf("ListTenants(bad cursor) = %v, want ErrInvalidCursor", err)
	}
}

func testTenantRoles(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a, b := mustTenant(t, s, "a"), mustTenant(t, s, "b")
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	steps := []struct {
		name string
		op   func() (bool, error)
		want bool
	}{
		{"ok/grant_in_a", func() (bool, error) { return s.GrantTenantRole(c, a.ID, u.ID, "admin") }, true},
		{"ok/grant_again_is_idempotent", func() (bool, error) { return s.GrantTenantRole(c, a.ID, u.ID, "admin") }, false},
		{"ok/grant_second_in_a", func() (bool, error) { return s.GrantTenantRole(c, a.ID, u.ID, "user") }, true},
		{"ok/grant_in_b", func() (bool, error) { return s.GrantTenantRole(c, b.ID, u.ID, "user") }, true},
		{"ok/revoke_in_a", func() (bool, error) { return s.RevokeTenantRole(c, a.ID, u.ID, "user") }, true},
		{"ok/revoke_not_held", func() (bool, error) { return s.RevokeTenantRole(c, a.ID, u.ID, "user") }, false},
	}
	for _, st := range steps {
		changed, err := st.op()
		if err != nil || changed != st.want {
			t.Fatalf("%s: changed %v, err %v; want %v", st.name, changed, err, st.want)
		}
	}
	for _, tc := range []struct {
		tenant string
		want   []string
	}{{a.ID, []string{"admin"}}, {b.ID, []string{"user"}}, {"ten_missing", []string{}}} {
		got, err := s.TenantRoles(c, tc.tenant, u.ID)
		if err != nil || !slices.Equal(got, tc.want) || got == nil {
			t.Fatalf("TenantRoles(%s) = %#v, %v; want %v", tc.tenant, got, err, tc.want)
		}
	}
	global, err := s.GetUser(c, u.ID)
	if err != nil || !slices.Equal(global.Roles, []string{"user"}) {
		t.Fatalf("global roles %v, %v; tenant grants must not change them", global.Roles, err)
	}
	ids, err := s.UserTenantIDs(c, u.ID)
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("UserTenantIDs = %v, %v; want %v", ids, err, want)
	}
	if _, err := s.GrantTenantRole(c, b.ID, u.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.UserTenantRoles(c, u.ID); err != nil || !slices.Equal(got, []string{"admin", "user"}) {
		t.Fatalf("UserTenantRoles = %v, %v; want [admin user] (each once, global roles left out)", got, err)
	}
	if _, err := s.RevokeTenantRole(c, b.ID, u.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	removed, err := s.RemoveTenantMember(c, a.ID, u.ID)
	if err != nil || !removed {
		t.Fatalf("RemoveTenantMember = %v, %v", removed, err)
	}
	if got, err := s.UserTenantRoles(c, u.ID); err != nil || !slices.Equal(got, []string{"user"}) {
		t.Fatalf("UserTenantRoles after leaving a = %v, %v; want [user]", got, err)
	}
	if removed, err = s.RemoveTenantMember(c, a.ID, u.ID); err != nil || removed {
		t.Fatalf("RemoveTenantMember again = %v, %v; want false", removed, err)
	}
	if got, _ := s.TenantRoles(c, a.ID, u.ID); len(got) != 0 {
		t.Fatalf("roles in a after removal: %v", got)
	}
	if got, _ := s.TenantRoles(c, b.ID, u.ID); !slices.Equal(got, []string{"user"}) {
		t.Fatalf("removal from a changed b: %v", got)
	}
}

func testTenantRolesFail(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustTenant(t, s, "a")
	u := mustCreateUser(t, s, newUser("ann@example.com"))
	for name, op := range map[string]func() (bool, error){
		"fail/unknown_role":   func() (bool, error) { return s.GrantTenantRole(c, a.ID, u.ID, "ghost") },
		"fail/unknown_user":   func() (bool, error) { return s.GrantTenantRole(c, a.ID, "usr_missing", "user") },
		"fail/unknown_tenant": func() (bool, error) { return s.GrantTenantRole(c, "ten_missing", u.ID, "user") },
	} {
		_, err := op()
		wantErr(t, name, err, store.ErrNotFound)
	}
	if got, _ := s.TenantRoles(c, a.ID, u.ID); len(got) != 0 {
		t.Fatalf("failed grants left roles %v", got)
	}
	for name, op := range map[string]func() (bool, error){
		"ok/revoke_nul":      func() (bool, error) { return s.RevokeTenantRole(c, a.ID, u.ID, "a\x00") },
		"ok/remove_unknown":  func() (bool, error) { return s.RemoveTenantMember(c, "ten_missing", u.ID) },
		"ok/remove_bad_utf8": func() (bool, error) { return s.RemoveTenantMember(c, a.ID, "\xff") },
	} {
		if changed, err := op(); err != nil || changed {
			t.Fatalf("%s = %v, %v; want false, nil", name, changed, err)
		}
	}
}

func testTenantCreateUserIn(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustTenant(t, s, "a")
	u := store.User{Kind: store.UserMachine, Name: "bot", Active: true}
	if err := s.CreateUserInTenant(c, &u, a.ID, []string{"user", "admin", "user"}); err != nil {
		t.Fatalf("CreateUserInTenant: %v", err)
	}
	if u.ID == "" || u.CreatedAt.IsZero() || len(u.Roles) != 0 {
		t.Fatalf("created %+v", u)
	}
	if got, err := s.TenantRoles(c, a.ID, u.ID); err != nil || !slices.Equal(got, []string{"admin", "user"}) {
		t.Fatalf("TenantRoles = %v, %v; want [admin user]", got, err)
	}
	if got, err := s.GetUser(c, u.ID); err != nil || len(got.Roles) != 0 || got.Kind != store.UserMachine {
		t.Fatalf("GetUser = %+v, %v; want a machine user with no global role", got, err)
	}
}

// testTenantCreateUserInFail: a user created in a tenant is created with
// its roles there or not at all: an unknown tenant or role, no role, or
// the context ending once the user row is written leave no user.
func testTenantCreateUserInFail(t *testing.T, s *sqlstore.Store) {
	a := mustTenant(t, s, "a")
	ctx, cancel := context.WithCancel(rctx(t))
	defer cancel()
	var armed atomic.Bool
	err := s.DB().Callback().Create().After("gorm:create").Register("test:cut_short", func(tx *gorm.DB) {
		if tx.Statement.Table == "users" && armed.CompareAndSwap(true, false) {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tenant string
		roles  []string
		cut    bool
		want   error // nil: any error
	}{
		{"unknown_role", a.ID, []string{"user", "ghost"}, false, store.ErrNotFound},
		{"unknown_tenant", "ten_missing", []string{"user"}, false, store.ErrNotFound},
		{"no_role", a.ID, nil, false, sqlstore.ErrInvalidUser},
		{"context_ends_once_the_user_is_written", a.ID, []string{"user"}, true, nil},
	} {
		c := rctx(t)
		if tc.cut {
			armed.Store(true)
			c = ctx
		}
		u := store.User{Kind: store.UserMachine, Name: "bot " + tc.name, Active: true}
		err := s.CreateUserInTenant(c, &u, tc.tenant, tc.roles)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Fatalf("%s: CreateUserInTenant = %v, want %v", tc.name, err, tc.want)
		}
		if tc.cut && armed.Load() {
			t.Fatalf("%s: no user row was written", tc.name)
		}
		page, err := s.ListUsers(rctx(t), store.UserFilter{Query: "bot " + tc.name})
		if err != nil || len(page.Items) != 0 {
			t.Fatalf("%s: users left behind: %+v, %v", tc.name, page.Items, err)
		}
	}
}

func testTenantMembers(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a, b := mustTenant(t, s, "a"), mustTenant(t, s, "b")
	ann := mustCreateUser(t, s, newUser("ann@example.com", "super_admin"))
	ben := mustCreateUser(t, s, newUser("ben@example.com"))
	cat := mustCreateUser(t, s, newUser("cat@example.com"))
	mustGrantTenant(t, s, a.ID, ann.ID, "admin")
	mustGrantTenant(t, s, a.ID, ben.ID, "user")
	mustGrantTenant(t, s, b.ID, cat.ID, "admin")
	mustGrantTenant(t, s, b.ID, ann.ID, "user")

	var got []store.TenantMember
	cursor := ""
	for i := 0; ; i++ {
		page, err := s.ListTenantMembers(c, a.ID, cursor, 1)
		if err != nil {
			t.Fatalf("ListTenantMembers: %v", err)
		}
		got = append(got, page.Items...)
		if cursor = page.NextCursor; cursor == "" || i > 5 {
			break
		}
	}
	want := []store.TenantMember{
		{TenantID: a.ID, UserID: ann.ID, Email: ann.Email, Roles: []string{"admin"}},
		{TenantID: a.ID, UserID: ben.ID, Email: ben.Email, Roles: []string{"user"}},
	}
	if len(got) != len(want) {
		t.Fatalf("members of a: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].UserID != want[i].UserID || got[i].Email != want[i].Email || !slices.Equal(got[i].Roles, want[i].Roles) {
			t.Fatalf("member %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	users, err := s.ListUsers(c, store.UserFilter{TenantID: b.ID})
	if err != nil || len(users.Items) != 2 {
		t.Fatalf("ListUsers(tenant b) = %+v, %v", users, err)
	}
	for _, u := range users.Items {
		if slices.Contains(u.Roles, "super_admin") || slices.Contains(u.Roles, "admin") && u.ID == ann.ID {
			t.Fatalf("ListUsers(tenant b) shows roles of elsewhere: %+v", u)
		}
	}
}

func testTenantMemberDeleted(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustTenant(t, s, "a")
	u := mustCreateUser(t, s, newUser("ann@example.com"))
	mustGrantTenant(t, s, a.ID, u.ID, "admin")
	if err := s.DeleteUser(c, u.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	page, err := s.ListTenantMembers(c, a.ID, "", 0)
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("members after the user's deletion: %+v, %v", page.Items, err)
	}
	if ids, err := s.UserTenantIDs(c, u.ID); err != nil || len(ids) != 0 {
		t.Fatalf("UserTenantIDs after deletion: %v, %v", ids, err)
	}
	for _, id := range []string{u.ID, "usr_missing", "a\x00b", "\xff"} {
		if roles, err := s.UserTenantRoles(c, id); err != nil || roles == nil || len(roles) != 0 {
			t.Fatalf("UserTenantRoles(%q) = %#v, %v; want empty, not nil", id, roles, err)
		}
	}
}

func testTenantRecords(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a, b := mustTenant(t, s, "a"), mustTenant(t, s, "b")
	admin := mustCreateUser(t, s, newUser("boss@example.com", "super_admin"))
	_, ha := secret()
	_, hb := secret()
	invA := &store.Invite{Email: "new@example.com", Role: "user", TokenHash: ha, InvitedBy: admin.ID,
		ExpiresAt: time.Now().Add(time.Hour), TenantID: a.ID}
	invB := &store.Invite{Email: "new@example.com", Role: "admin", TokenHash: hb, InvitedBy: admin.ID,
		ExpiresAt: time.Now().Add(time.Hour), TenantID: b.ID}
	for _, inv := range []*store.Invite{invA, invB} {
		if err := s.CreateInvite(c, inv, func([]store.Invite) error { return nil }); err != nil {
			t.Fatalf("CreateInvite: %v", err)
		}
	}
	gotA, err := s.GetInvite(c, invA.ID)
	if err != nil || gotA.TenantID != a.ID || gotA.Status != store.InvitePending {
		t.Fatalf("invite of a: %+v, %v (an invite of b must not supersede it)", gotA, err)
	}
	page, err := s.ListTenantInvites(c, b.ID, "", 0)
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != invB.ID {
		t.Fatalf("ListTenantInvites(b) = %+v, %v", page.Items, err)
	}
	nu := &store.User{Name: "New", PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", Active: true}
	if _, err := s.AcceptInvite(c, hb, time.Now(), nu); err != nil {
		t.Fatalf("AcceptInvite: %v", err)
	}
	if len(nu.Roles) != 0 {
		t.Fatalf("a tenant invite gave global roles %v", nu.Roles)
	}
	if roles, _ := s.TenantRoles(c, b.ID, nu.ID); !slices.Equal(roles, []string{"admin"}) {
		t.Fatalf("roles in b after acceptance: %v", roles)
	}
	if roles, _ := s.TenantRoles(c, a.ID, nu.ID); len(roles) != 0 {
		t.Fatalf("roles in a after accepting b's invite: %v", roles)
	}

	for _, e := range []store.AuditEvent{{Action: "x.a", TenantID: a.ID}, {Action: "x.b", TenantID: b.ID}, {Action: "x.p"}} {
		ev := e
		if err := s.AppendAudit(c, &ev); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	events, err := s.ListAudit(c, store.AuditFilter{TenantID: a.ID})
	if err != nil || len(events.Items) != 1 || events.Items[0].Action != "x.a" || events.Items[0].TenantID != a.ID {
		t.Fatalf("ListAudit(tenant a) = %+v, %v", events.Items, err)
	}

	cl := store.Client{ID: "tenant-client", Name: "t", SecretHash: []byte("h"), Grants: []string{"client_credentials"}, TenantID: a.ID}
	if err := s.CreateClient(c, &cl, nil); err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	got, err := s.GetClient(c, cl.ID)
	if err != nil || got.TenantID != a.ID {
		t.Fatalf("GetClient = %+v, %v; want tenant %s", got, err, a.ID)
	}
}

func testDefaultTenant(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	root := mustCreateUser(t, s, newUser("root@example.com", "super_admin", "admin"))
	ann := mustCreateUser(t, s, newUser("ann@example.com", "admin"))
	ben := mustCreateUser(t, s, newUser("ben@example.com", "user"))
	created, err := s.EnsureDefaultTenant(c, "Default", []string{"super_admin"})
	if err != nil || !created {
		t.Fatalf("EnsureDefaultTenant = %v, %v; want true", created, err)
	}
	def, err := s.GetTenantBySlug(c, store.DefaultTenantSlug)
	if err != nil || !def.Active || def.Name != "Default" {
		t.Fatalf("default tenant %+v, %v", def, err)
	}
	for _, tc := range []struct {
		user store.User
		want []string
	}{{root, []string{"admin"}}, {ann, []string{"admin"}}, {ben, []string{"user"}}} {
		got, err := s.TenantRoles(c, def.ID, tc.user.ID)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Fatalf("roles of %s in default: %v, %v; want %v", tc.user.Email, got, err, tc.want)
		}
		g, _ := s.GetUser(c, tc.user.ID)
		if !slices.Equal(g.Roles, tc.user.Roles) {
			t.Fatalf("global roles of %s changed: %v, want %v", tc.user.Email, g.Roles, tc.user.Roles)
		}
	}
	// A later change is not undone by running it again.
	if _, err := s.RemoveTenantMember(c, def.ID, ben.ID); err != nil {
		t.Fatalf("RemoveTenantMember: %v", err)
	}
	if created, err = s.EnsureDefaultTenant(c, "Default", []string{"super_admin"}); err != nil || created {
		t.Fatalf("EnsureDefaultTenant again = %v, %v; want false", created, err)
	}
	if got, _ := s.TenantRoles(c, def.ID, ben.ID); len(got) != 0 {
		t.Fatalf("running it again restored a removed membership: %v", got)
	}
}

func testDefaultTenantRace(t *testing.T, s *sqlstore.Store) {
	u := mustCreateUser(t, s, newUser("ann@example.com", "admin", "user"))
	const n = 6
	var wg sync.WaitGroup
	results := make([]bool, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = s.EnsureDefaultTenant(rctx(t), "Default", nil)
		}(i)
	}
	wg.Wait()
	won := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("EnsureDefaultTenant: %v", errs[i])
		}
		if results[i] {
			won++
		}
	}
	if won != 1 {
		t.Fatalf("%d callers moved the assignments, want exactly 1", won)
	}
	def, err := s.GetTenantBySlug(rctx(t), store.DefaultTenantSlug)
	if err != nil {
		t.Fatalf("GetTenantBySlug: %v", err)
	}
	if got, _ := s.TenantRoles(rctx(t), def.ID, u.ID); !slices.Equal(got, []string{"admin", "user"}) {
		t.Fatalf("roles in default: %v", got)
	}
}

func testTenantInviteExisting(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a := mustTenant(t, s, "a")
	boss := mustCreateUser(t, s, newUser("boss@example.com", "super_admin"))
	ann := mustCreateUser(t, s, newUser("Ann@example.com", "user"))
	other := mustCreateUser(t, s, newUser("other@example.com"))
	_, h := secret()
	inv := &store.Invite{Email: "ann@example.com", Role: "admin", TokenHash: h, InvitedBy: boss.ID,
		ExpiresAt: time.Now().Add(time.Hour), TenantID: a.ID}
	if err := s.CreateInvite(c, inv, func([]store.Invite) error { return nil }); err != nil {
		t.Fatalf("CreateInvite: %v", err)
	}
	_, err := s.AcceptTenantInvite(c, h, time.Now(), other.ID)
	wantErr(t, "AcceptTenantInvite(another address)", err, store.ErrNotFound)
	got, err := s.AcceptTenantInvite(c, h, time.Now(), ann.ID)
	if err != nil || got.Status != store.InviteAccepted || got.UserID != ann.ID {
		t.Fatalf("AcceptTenantInvite = %+v, %v", got, err)
	}
	if roles, _ := s.TenantRoles(c, a.ID, ann.ID); !slices.Equal(roles, []string{"admin"}) {
		t.Fatalf("roles in a: %v", roles)
	}
	if u, _ := s.GetUser(c, ann.ID); !slices.Equal(u.Roles, []string{"user"}) {
		t.Fatalf("global roles changed: %v", u.Roles)
	}
	_, err = s.AcceptTenantInvite(c, h, time.Now(), ann.ID)
	wantErr(t, "AcceptTenantInvite(again)", err, store.ErrTokenUsed)
}

// testTenantUpdateRace: concurrent updates of one tenant serialise, each
// applying its change to the tenant as the others left it. Half the racers
// rename (counting in the name), the other half turn the tenant off, as a
// rename and a deactivation sent at once by two operators: no rename may
// write the old flag back, and no rename is lost.
// testHomeTenant: UserHomeTenant names the tenant that created the
// account, by an accepted invite of it (with or without an upstream
// identity) or CreateUserInTenant, and nothing else makes or moves the
// mark: an account created on its own or by a platform invite has none,
// and joining a tenant (an invite accepted by the existing account, a role
// granted) or another one gives none.
func testHomeTenant(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	a, b := mustTenant(t, s, "a"), mustTenant(t, s, "b")
	invite := func(email, tenantID string) []byte {
		t.Helper()
		_, h := secret()
		inv := &store.Invite{Email: email, Role: "user", TokenHash: h, InvitedBy: "usr_inviter", ExpiresAt: time.Now().Add(time.Hour), TenantID: tenantID}
		if err := s.CreateInvite(c, inv, nil); err != nil {
			t.Fatalf("CreateInvite(%s): %v", email, err)
		}
		return h
	}
	invited := &store.User{PasswordHash: "$p", Active: true}
	if _, err := s.AcceptInvite(c, invite("invited@example.com", a.ID), time.Now(), invited); err != nil {
		t.Fatal(err)
	}
	federated := &store.User{Active: true}
	if _, err := s.AcceptInviteWithIdentity(c, invite("federated@example.com", a.ID), time.Now(), federated,
		&store.FederatedIdentity{Provider: "google", Issuer: "https://accounts.google.com", Subject: "sub-federated", Email: "federated@example.com"}); err != nil {
		t.Fatal(err)
	}
	bot := store.User{Kind: store.UserMachine, Name: "bot", Active: true}
	if err := s.CreateUserInTenant(c, &bot, a.ID, []string{"user"}); err != nil {
		t.Fatal(err)
	}
	platform := &store.User{PasswordHash: "$p", Active: true}
	if _, err := s.AcceptInvite(c, invite("platform@example.com", ""), time.Now(), platform); err != nil {
		t.Fatal(err)
	}
	own := mustCreateUser(t, s, newUser("own@example.com"))
	joined := mustCreateUser(t, s, newUser("joined@example.com"))
	if _, err := s.AcceptTenantInvite(c, invite("joined@example.com", a.ID), time.Now(), joined.ID); err != nil {
		t.Fatal(err)
	}
	mustGrantTenant(t, s, a.ID, own.ID, "user")
	// Joining another tenant moves no mark.
	if _, err := s.AcceptTenantInvite(c, invite("invited@example.com", b.ID), time.Now(), invited.ID); err != nil {
		t.Fatal(err)
	}
	mustGrantTenant(t, s, b.ID, bot.ID, "user")
	for _, tc := range []struct {
		name, id, want string
	}{
		{"ok/invited_by_a", invited.ID, a.ID},
		{"ok/invited_by_a_through_a_provider", federated.ID, a.ID},
		{"ok/created_in_a", bot.ID, a.ID},
		{"ok/platform_invite", platform.ID, ""},
		{"ok/created_then_granted_a_role_in_a", own.ID, ""},
		{"ok/existing_account_joined_a", joined.ID, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := s.UserHomeTenant(rctx(t), tc.id); err != nil || got != tc.want {
				t.Fatalf("UserHomeTenant = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	for _, id := range []string{"usr_missing", "bad\x00id"} {
		_, err := s.UserHomeTenant(c, id)
		wantErr(t, "UserHomeTenant("+id+")", err, store.ErrNotFound)
	}
}

func testTenantUpdateRace(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	tn := mustTenant(t, s, "acme")
	if _, err := s.UpdateTenant(c, tn.ID, func(x *store.Tenant) error { x.Name = "0"; return nil }); err != nil {
		t.Fatalf("UpdateTenant: %v", err)
	}
	errs := race(relRacers, func(i int) error {
		_, err := s.UpdateTenant(c, tn.ID, func(x *store.Tenant) error {
			if i%2 == 1 {
				x.Active = false
				return nil
			}
			n, err := strconv.Atoi(x.Name)
			if err != nil {
				return err
			}
			x.Name = strconv.Itoa(n + 1)
			return nil
		})
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	got, _ := s.GetTenant(c, tn.ID)
	if renames := (relRacers + 1) / 2; got.Active || got.Name != strconv.Itoa(renames) {
		t.Fatalf("after %d renames racing %d deactivations: %+v (an update was lost)", renames, relRacers/2, got)
	}
}
