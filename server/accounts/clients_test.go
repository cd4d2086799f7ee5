package accounts_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

// TestClientCeiling: the one rule for what a client may carry, as the admin
// API (a user actor) and the CLI (the operator) meet it. Unknown scopes are
// refused for everyone; a user gives only what they hold, and the issuer
// audience only with every admin permission; the operator is bound by the
// first rule alone; nobody deletes the built-in client.
func TestClientCeiling(t *testing.T) {
	in, fx, _ := deployment(t)
	svc := in.App.Accounts
	root := actor(fx.User(t, "root@example.com", "root long passphrase", "super_admin"))
	admin := actor(fx.User(t, "adm@example.com", "admin long passphrase", "admin"))
	operator := accounts.Operator()
	issuer := in.Config.Issuer
	for _, tc := range []struct {
		name  string
		actor accounts.Actor
		spec  clients.Spec
		want  error // nil, or the apierr kind
	}{
		{"fail/admin: unknown scope", admin, clients.Spec{ID: "client-1", Scopes: []string{"users:read", "nope:read"}}, apierr.ErrInvalidRequest},
		{"fail/admin: unknown scope is checked before the ceiling", admin, clients.Spec{ID: "client-1", Scopes: []string{"keys:rotate", "nope:read"}}, apierr.ErrInvalidRequest},
		{"fail/admin: a permission it lacks", admin, clients.Spec{ID: "client-1", Scopes: []string{"keys:rotate"}}, apierr.ErrForbidden},
		{"fail/admin: the issuer audience", admin, clients.Spec{ID: "client-1", Audiences: []string{"api", issuer}}, apierr.ErrForbidden},
		{"fail/root: unknown scope", root, clients.Spec{ID: "client-1", Scopes: []string{"nope:read"}}, apierr.ErrInvalidRequest},
		{"fail/operator: unknown scope", operator, clients.Spec{ID: "client-1", Scopes: []string{"nope:read"}}, apierr.ErrInvalidRequest},
		{"ok/admin: what it holds", admin, clients.Spec{ID: "client-2", Scopes: []string{"users:read"}, Audiences: []string{"api"}}, nil},
		{"ok/admin: no scopes listed (bounded by each user)", admin, clients.Spec{ID: "client-3"}, nil},
		{"ok/root: everything", root, clients.Spec{ID: "client-4", Scopes: []string{"keys:rotate"}, Audiences: []string{issuer}}, nil},
		{"ok/operator: above any ceiling", operator, clients.Spec{ID: "client-5", Scopes: []string{"keys:rotate"}, Audiences: []string{issuer}}, nil},
		{"fail/admin: first-party", admin, clients.Spec{ID: "client-6", FirstParty: true}, apierr.ErrForbidden},
		{"ok/root: first-party", root, clients.Spec{ID: "client-6", FirstParty: true}, nil},
		{"ok/operator: first-party", operator, clients.Spec{ID: "client-7", FirstParty: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.CreateClient(t.Context(), tc.actor, tc.spec)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CreateClient: %v, want %v", err, tc.want)
			}
		})
	}
	page, err := in.App.Core.Store.ListAudit(t.Context(), store.AuditFilter{TargetID: "client-6"})
	if err != nil || len(page.Items) != 1 || page.Items[0].Details["first_party"] != "true" {
		t.Fatalf("audit of the first-party client: %+v, %v", page.Items, err)
	}
	if c, err := in.App.Core.Store.GetClient(t.Context(), "portcullis"); err != nil || !c.FirstParty {
		t.Fatalf("the built-in client is not first-party: %+v, %v", c, err)
	}
	for name, a := range map[string]accounts.Actor{"root": root, "operator": operator} {
		if err := svc.DeleteClient(t.Context(), a, "portcullis"); !errors.Is(err, apierr.ErrConflict) {
			t.Fatalf("%s deleted the built-in client: %v", name, err)
		}
	}
	// The operator is no user: it cannot act where a user is needed.
	if _, err := svc.RevokeInvite(t.Context(), operator, "inv_aaaaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, apierr.ErrInvalidToken) {
		t.Fatalf("operator as a user: %v", err)
	}
}

// TestEnsureFirstPartyClientMarksFirstParty: a built-in client that is not
// first-party (a database from before migration 3 under a renamed id) is
// marked first-party at start-up, keeping its other settings.
func TestEnsureFirstPartyClientMarksFirstParty(t *testing.T) {
	in, _, _ := deployment(t)
	st := in.App.Core.Store
	if err := st.SetClientFirstParty(t.Context(), "portcullis", false); err != nil {
		t.Fatalf("SetClientFirstParty: %v", err)
	}
	before, _ := st.GetClient(t.Context(), "portcullis")
	if err := in.App.Accounts.EnsureFirstPartyClient(t.Context()); err != nil {
		t.Fatalf("EnsureFirstPartyClient: %v", err)
	}
	after, err := st.GetClient(t.Context(), "portcullis")
	if err != nil || !after.FirstParty || !slices.Equal(after.Audiences, before.Audiences) || !slices.Equal(after.Grants, before.Grants) {
		t.Fatalf("after EnsureFirstPartyClient: %+v, %v", after, err)
	}
}
