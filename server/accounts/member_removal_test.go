package accounts_test

import (
	"context"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/tenancy"
)

// TestMemberRemovalEndsSessionsAroundIt: removing an organisation's member
// ends their sessions before and after the removal (endingSessions). When
// the sessions cannot be ended first, the member stays (503) and their
// organisation token still works; the retry removes them and the token is
// refused. Before, the first attempt removed the member and answered 503,
// and the retry, finding no member, ended nothing: the member's admin token
// of the organisation kept authenticating until it expired.
func TestMemberRemovalEndsSessionsAroundIt(t *testing.T) {
	smtp := mailtest.NewServer(t)
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_SMTP_URL"] = smtp.URL()
	env["PORTCULLIS_TENANTS"] = "on"
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	ctx := context.Background()
	secret := fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	sessions := &endingSessions{Service: in.App.Tokens}
	svc := serviceEnding(t, in, smtp, sessions, func(d *accounts.Deps) { d.Tenancy = tenancy.New(in.App.Core.Store, in.App.Core.Policy) })
	tn, err := svc.CreateTenant(ctx, actor(root), "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	u := fx.User(t, "m@example.com", "member long passphrase")
	if _, err := svc.AddTenantMember(ctx, actor(root), tn.ID, u.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	c := in.Client(t)
	f := st.PasswordForm("m@example.com", "member long passphrase", "")
	f.Set("tenant", "acme")
	tok := c.PostForm("/oauth2/token", f, st.Basic("web", secret)).Token()

	sessions.fail = func(n int32) error {
		if n == 1 {
			return apierr.ErrTemporarilyUnavailable
		}
		return nil
	}
	if err := svc.RemoveTenantMember(ctx, actor(root), tn.ID, u.ID); err == nil {
		t.Fatal("the member was removed although the sessions could not be ended")
	}
	sessions.fail = nil
	if _, err := in.App.Tokens.AuthenticateBearer(ctx, tok.AccessToken); err != nil {
		t.Fatalf("the member's token after a removal that changed nothing: %v", err)
	}
	if err := svc.RemoveTenantMember(ctx, actor(root), tn.ID, u.ID); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, err := in.App.Tokens.AuthenticateBearer(ctx, tok.AccessToken); err == nil {
		t.Fatal("the removed member's organisation token still authenticates")
	}
}
