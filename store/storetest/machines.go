package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// testMachineUsers: machine users are created without email, username or
// password (several of them, beside people), read back with their kind,
// never found by an email lookup, and keep their kind through updates.
func testMachineUsers(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	syncDefaultRoles(t, s)
	person := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	if person.Kind != store.UserHuman || person.IsMachine() {
		t.Fatalf("a user created without a kind is %q, want human", person.Kind)
	}
	var bots []store.User
	for i := 0; i < 3; i++ {
		m := mustCreateUser(t, s, &store.User{Kind: store.UserMachine, Name: fmt.Sprintf("ci bot %d", i), Active: true, Roles: []string{"user"}})
		if m.Kind != store.UserMachine || !m.IsMachine() || m.ID == "" {
			t.Fatalf("created machine user %+v", m)
		}
		bots = append(bots, m)
	}
	got, err := s.GetUser(c, bots[0].ID)
	if err != nil || got.Kind != store.UserMachine || got.Email != "" || got.PasswordHash != "" || len(got.Roles) != 1 {
		t.Fatalf("GetUser(machine) = %+v, %v", got, err)
	}
	if got, err := s.GetUser(c, person.ID); err != nil || got.Kind != store.UserHuman {
		t.Fatalf("GetUser(person) = %+v, %v", got, err)
	}
	for _, lookup := range []func() (store.User, error){
		func() (store.User, error) { return s.GetUserByEmail(c, "") },
		func() (store.User, error) { return userByLogin(c, s, "") },
		func() (store.User, error) { return userByLogin(c, s, "ci bot 0") },
	} {
		if u, err := lookup(); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a lookup by login found %+v, %v; want ErrNotFound", u, err)
		}
	}
	page, err := s.ListUsers(c, store.UserFilter{Limit: 10})
	if err != nil || len(page.Items) != 4 {
		t.Fatalf("ListUsers = %+v, %v", page.Items, err)
	}
	kinds := map[string]int{}
	for _, u := range page.Items {
		kinds[u.Kind]++
	}
	if kinds[store.UserHuman] != 1 || kinds[store.UserMachine] != 3 {
		t.Fatalf("ListUsers kinds = %v", kinds)
	}
	if page, err := s.ListUsers(c, store.UserFilter{Query: "ci bot"}); err != nil || len(page.Items) != 3 {
		t.Fatalf("ListUsers(q=ci bot) = %d users, %v", len(page.Items), err)
	}
	// An update cannot turn a machine into a person (or give it an email).
	u, err := s.UpdateUser(c, bots[1].ID, func(u *store.User) error {
		u.Kind, u.Name, u.Active = store.UserHuman, "renamed bot", false
		return nil
	})
	if err != nil || u.Kind != store.UserMachine || u.Name != "renamed bot" || u.Active {
		t.Fatalf("UpdateUser(machine) = %+v, %v", u, err)
	}
	if _, err := s.UpdateUser(c, bots[1].ID, func(u *store.User) error { u.Email = "bot@example.com"; return nil }); !errors.Is(err, sqlstore.ErrInvalidUser) {
		t.Fatalf("giving a machine user an email = %v, want ErrInvalidUser", err)
	}
	if err := s.DeleteUser(c, bots[2].ID); err != nil {
		t.Fatalf("DeleteUser(machine): %v", err)
	}
}

func testMachineUsersInvalid(t *testing.T, s *sqlstore.Store) {
	c := rctx(t)
	for _, tc := range []struct {
		name string
		u    store.User
	}{
		{"machine_with_email", store.User{Kind: store.UserMachine, Email: "bot@example.com", Name: "bot"}},
		{"machine_with_username", store.User{Kind: store.UserMachine, Username: "bot", Name: "bot"}},
		{"machine_with_password", store.User{Kind: store.UserMachine, PasswordHash: "$argon2id$x", Name: "bot"}},
		{"unknown_kind", store.User{Kind: "robot", Email: "r@example.com"}},
		{"human_without_email", store.User{Kind: store.UserHuman, Name: "nobody"}},
	} {
		u := tc.u
		if err := s.CreateUser(c, &u); !errors.Is(err, sqlstore.ErrInvalidUser) {
			t.Fatalf("%s: CreateUser = %v, want ErrInvalidUser", tc.name, err)
		}
	}
	if page, err := s.ListUsers(c, store.UserFilter{}); err != nil || len(page.Items) != 0 {
		t.Fatalf("refused users were stored: %+v, %v", page.Items, err)
	}
}
