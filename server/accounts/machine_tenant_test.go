package accounts_test

import (
	"context"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/store"
)

// TestOrgMachineUserIsCreatedWithItsRoles: an organisation's machine user
// is created with its roles there in one write. A failure injected around
// the real store (a grant failing, the request's context ending once the
// user is written) leaves no user behind; the normal path audits
// user.created and role.granted for each role. Before, the user was
// written bare and then given each role in a write of its own: a failure
// between them left a machine user of no organisation, which the
// organisation's admin could neither see nor delete, answered with a 500.
func TestOrgMachineUserIsCreatedWithItsRoles(t *testing.T) {
	smtp := mailtest.NewServer(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_SMTP_URL"] = smtp.URL()
	env["PORTCULLIS_TENANTS"] = "on"
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	core := in.App.Core
	ctx := context.Background()
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	fs := &faultyStore{Store: core.Store}
	svc := serviceEnding(t, in, smtp, &endingSessions{Service: in.App.Tokens}, func(d *accounts.Deps) {
		d.Store = fs
		d.Tenancy = tenancy.New(core.Store, core.Policy)
	})
	tn, err := svc.CreateTenant(ctx, actor(root), "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	adm := fx.User(t, "adm@example.com", "admin long passphrase")
	if _, err := svc.AddTenantMember(ctx, actor(root), tn.ID, adm.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	orgAdmin := actor(adm)
	orgAdmin.Tenant = "acme"

	for _, tc := range []struct {
		name string
		// fail is the failure injected (nil: none); cancel, set, ends the
		// request's context.
		fail func(op string, cancel func()) error
	}{
		{"ok/created_with_its_role", nil},
		{"fault/the_grant_fails", func(op string, _ func()) error {
			if op == "grant_tenant_role" {
				return apierr.ErrTemporarilyUnavailable
			}
			return nil
		}},
		{"fault/client_gone_once_the_user_is_written", func(op string, cancel func()) error {
			if op == "created_user" {
				cancel()
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "bot " + tc.name
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if tc.fail != nil {
				fs.fail = func(_ context.Context, op string) error { return tc.fail(op, cancel) }
			}
			u, err := svc.CreateUser(rctx, orgAdmin, accounts.NewUser{Kind: store.UserMachine, Name: name, Roles: []string{"user"}})
			fs.fail = nil
			page, lerr := core.Store.ListUsers(ctx, store.UserFilter{Query: name})
			if lerr != nil {
				t.Fatal(lerr)
			}
			if err != nil {
				if len(page.Items) != 0 {
					t.Fatalf("the creation answered %v but left %+v behind", err, page.Items)
				}
				return
			}
			if tc.fail != nil {
				t.Logf("the creation succeeded despite the failure injected")
			}
			if len(page.Items) != 1 || page.Items[0].ID != u.ID {
				t.Fatalf("users named %q: %+v", name, page.Items)
			}
			roles, err := core.Store.TenantRoles(ctx, tn.ID, u.ID)
			if err != nil || len(roles) != 1 || roles[0] != "user" {
				t.Fatalf("the machine user's roles in acme: %v, %v", roles, err)
			}
			for _, action := range []string{"user.created", "role.granted"} {
				page, err := core.Store.ListAudit(ctx, store.AuditFilter{TargetID: u.ID, Action: action})
				if err != nil || len(page.Items) != 1 {
					t.Fatalf("%s events: %d, %v; want one", action, len(page.Items), err)
				}
			}
		})
	}
}
