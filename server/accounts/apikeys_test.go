package accounts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

// TestAPIKeyAndMachineRefusals: every check that decides who may manage
// machine users and API keys, refusing (and the allowed case beside it).
func TestAPIKeyAndMachineRefusals(t *testing.T) {
	in, fx, _ := deployment(t)
	svc := in.App.Accounts
	ctx := context.Background()
	root := fx.User(t, "root@example.com", "root long passphrase", "super_admin")
	adm := fx.User(t, "adm@example.com", "adm long passphrase", "admin")
	usr := fx.User(t, "usr@example.com", "usr long passphrase", "user")
	fx.Client(t, clients.Spec{ID: "third", Name: "Third", Grants: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{"https://rp.example/callback"}})
	bot, err := svc.CreateUser(ctx, actor(root), accounts.NewUser{Kind: store.UserMachine, Name: "bot", Roles: []string{"user"}})
	if err != nil || bot.Kind != store.UserMachine {
		t.Fatalf("CreateUser(machine) = %+v, %v", bot, err)
	}
	boss, err := svc.CreateUser(ctx, actor(root), accounts.NewUser{Kind: store.UserMachine, Name: "boss", Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	keyActor := func(u store.User) accounts.Actor { a := actor(u); a.APIKey = "apk_x"; return a }
	self := actor(usr) // through the built-in first-party client
	self.ClientID = accounts.DefaultFirstPartyClientID
	third := actor(usr)
	third.ClientID = "third"
	req := apikeys.CreateRequest{Name: "k", Scopes: []string{"users:read"}}
	usrReq := apikeys.CreateRequest{Name: "k", Scopes: []string{}}
	// root's token through the built-in client, narrowed to users:read,
	// and one whose scope is unknown (no access token: bounds to nothing).
	rootRead := actor(root)
	rootRead.ClientID, rootRead.Scope = accounts.DefaultFirstPartyClientID, []string{"openid", "users:read"}
	rootRead.Audience = []string{in.Config.Issuer} // the built-in client's tokens are Portcullis's own
	rootDownstream := rootRead
	rootDownstream.Audience = []string{"api"}
	rootNoScope := rootRead
	rootNoScope.Scope = nil

	for _, tc := range []struct {
		name string
		run  func() error
		want *apierr.Error // nil: success
	}{
		{"ok/root_creates_machine_admin", func() error {
			_, err := svc.CreateUser(ctx, actor(root), accounts.NewUser{Kind: store.UserMachine, Name: "x", Roles: []string{"admin"}})
			return err
		}, nil},
		{"fail/admin_creates_machine_admin", func() error {
			_, err := svc.CreateUser(ctx, actor(adm), accounts.NewUser{Kind: store.UserMachine, Name: "x", Roles: []string{"admin"}})
			return err
		}, apierr.ErrForbidden},
		// Giving roles needs roles:assign, which a user lacks.
		{"fail/user_creates_machine", func() error {
			_, err := svc.CreateUser(ctx, actor(usr), accounts.NewUser{Kind: store.UserMachine, Name: "x", Roles: []string{"user"}})
			return err
		}, apierr.ErrInsufficientScope},
		// root's token narrowed to users:read passes on no more than it:
		// no role to a machine, no key beyond it, no client beyond it.
		{"fail/narrowed_token_gives_a_machine_roles", func() error {
			_, err := svc.CreateUser(ctx, rootRead, accounts.NewUser{Kind: store.UserMachine, Name: "x", Roles: []string{"user"}})
			return err
		}, apierr.ErrInsufficientScope},
		{"ok/narrowed_token_makes_a_bare_machine", func() error {
			_, err := svc.CreateUser(ctx, rootRead, accounts.NewUser{Kind: store.UserMachine, Name: "x"})
			return err
		}, nil},
		{"fail/narrowed_token_keys_a_machine_beyond_it", func() error {
			_, err := svc.CreateMachineAPIKey(ctx, rootRead, boss.ID, apikeys.CreateRequest{Name: "k", Scopes: []string{"users:read", "users:write"}})
			return err
		}, apierr.ErrInvalidScope},
		{"ok/narrowed_token_keys_a_machine_within_it", func() error { _, err := svc.CreateMachineAPIKey(ctx, rootRead, boss.ID, req); return err }, nil},
		{"fail/narrowed_token_makes_a_client_beyond_it", func() error {
			_, err := svc.CreateClient(ctx, rootRead, clients.Spec{ID: "beyond", Name: "Beyond", Grants: []string{"client_credentials"}, Scopes: []string{"users:write"}})
			return err
		}, apierr.ErrForbidden},
		{"ok/narrowed_token_makes_a_client_within_it", func() error {
			_, err := svc.CreateClient(ctx, rootRead, clients.Spec{ID: "within", Name: "Within", Grants: []string{"client_credentials"}, Scopes: []string{"users:read"}})
			return err
		}, nil},
		{"fail/create_human", func() error {
			_, err := svc.CreateUser(ctx, actor(root), accounts.NewUser{Kind: store.UserHuman, Name: "x"})
			return err
		}, apierr.ErrInvalidRequest},
		{"fail/create_machine_without_name", func() error {
			_, err := svc.CreateUser(ctx, actor(root), accounts.NewUser{Kind: store.UserMachine, Name: " "})
			return err
		}, apierr.ErrInvalidRequest},
		// The ceiling lets an admin manage a user-role machine's keys; the
		// key then needs scopes (a user holds no permission here).
		{"fail/admin_keys_for_a_user_machine_need_scopes", func() error {
			_, err := svc.CreateMachineAPIKey(ctx, actor(adm), bot.ID, apikeys.CreateRequest{Name: "k", Scopes: []string{}})
			return err
		}, apierr.ErrInvalidRequest},
		{"fail/admin_keys_for_a_machine_admin", func() error { _, err := svc.CreateMachineAPIKey(ctx, actor(adm), boss.ID, req); return err }, apierr.ErrForbidden},
		{"fail/admin_lists_a_machine_admin", func() error { _, err := svc.ListMachineAPIKeys(ctx, actor(adm), boss.ID, "", 0); return err }, apierr.ErrForbidden},
		{"fail/admin_revokes_a_machine_admin's", func() error { return svc.RevokeMachineAPIKey(ctx, actor(adm), boss.ID, "apk_x") }, apierr.ErrForbidden},
		{"ok/root_keys_for_a_machine_admin", func() error { _, err := svc.CreateMachineAPIKey(ctx, actor(root), boss.ID, req); return err }, nil},
		{"fail/key_token_manages_machine_keys", func() error { _, err := svc.CreateMachineAPIKey(ctx, keyActor(root), boss.ID, req); return err }, apierr.ErrForbidden},
		{"fail/machine_manages_its_own_keys", func() error {
			_, err := svc.ListMachineAPIKeys(ctx, actor(store.User{ID: boss.ID}), boss.ID, "", 0)
			return err
		}, apierr.ErrForbidden},
		{"fail/person's_keys_through_admin", func() error { _, err := svc.ListMachineAPIKeys(ctx, actor(root), usr.ID, "", 0); return err }, apierr.ErrInvalidRequest},
		{"fail/unknown_machine", func() error { _, err := svc.ListMachineAPIKeys(ctx, actor(root), "usr_nobody", "", 0); return err }, apierr.ErrNotFound},
		{"ok/own_keys", func() error { _, err := svc.ListOwnAPIKeys(ctx, self, "", 0); return err }, nil},
		{"fail/own_keys_with_a_key_token", func() error { _, err := svc.CreateOwnAPIKey(ctx, keyActor(adm), req); return err }, apierr.ErrForbidden},
		{"fail/own_keys_with_a_third_party_token", func() error { _, err := svc.ListOwnAPIKeys(ctx, third, "", 0); return err }, apierr.ErrForbidden},
		{"fail/own_sessions_with_a_key_token", func() error { _, err := svc.OwnSessions(ctx, keyActor(usr), "", 0); return err }, apierr.ErrForbidden},
		{"fail/own_key_beyond_one's_permissions", func() error {
			_, err := svc.CreateOwnAPIKey(ctx, self, apikeys.CreateRequest{Name: "k", Scopes: []string{"users:read"}})
			return err
		}, apierr.ErrInvalidScope},
		{"ok/own_key_within_the_token's_scope", func() error { _, err := svc.CreateOwnAPIKey(ctx, rootRead, req); return err }, nil},
		{"fail/own_admin_key_from_a_downstream_token", func() error { _, err := svc.CreateOwnAPIKey(ctx, rootDownstream, req); return err },
			apierr.ErrInvalidScope},
		{"fail/own_key_beyond_the_token's_scope", func() error {
			_, err := svc.CreateOwnAPIKey(ctx, rootRead, apikeys.CreateRequest{Name: "k", Scopes: []string{"users:read", "keys:rotate"}})
			return err
		}, apierr.ErrInvalidScope},
		{"fail/own_key_without_a_token_scope", func() error { _, err := svc.CreateOwnAPIKey(ctx, rootNoScope, req); return err }, apierr.ErrInvalidScope},
		{"fail/own_key_must_change_password", func() error {
			if _, err := svc.SetTemporaryPassword(ctx, actor(root), usr.ID, "a temporary passphrase"); err != nil {
				return err
			}
			_, err := svc.CreateOwnAPIKey(ctx, self, usrReq)
			return err
		}, apierr.ErrPasswordChangeRequired},
		{"fail/machine_temporary_password", func() error {
			_, err := svc.SetTemporaryPassword(ctx, actor(root), bot.ID, "a temporary passphrase")
			return err
		}, apierr.ErrInvalidRequest},
		{"fail/machine_reset_link", func() error { _, err := svc.RequestPasswordReset(ctx, actor(root), bot.ID); return err }, apierr.ErrInvalidRequest},
		{"fail/machine_invite", func() error {
			_, err := svc.CreateInviteOfKind(ctx, actor(root), store.UserMachine, "bot@example.com", "user")
			return err
		}, apierr.ErrInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != tc.want.Code || ae.Status != tc.want.Status {
				t.Fatalf("got %v, want %d %s", err, tc.want.Status, tc.want.Code)
			}
		})
	}
}
