package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

func mustClient(t *testing.T, s *sqlstore.Store, id string) {
	t.Helper()
	if err := s.CreateClient(rctx(t), &store.Client{ID: id, Name: id, Public: true, Grants: []string{"authorization_code"}}, nil); err != nil {
		t.Fatalf("CreateClient(%s): %v", id, err)
	}
}

func getConsent(t *testing.T, s *sqlstore.Store, user, client string) store.Consent {
	t.Helper()
	got, err := s.GetConsent(rctx(t), user, client)
	if err != nil {
		t.Fatalf("GetConsent(%s, %s): %v", user, client, err)
	}
	wantUTC(t, "consent granted_at", got.GrantedAt)
	return got
}

func consentClients(t *testing.T, s *sqlstore.Store, user string) []string {
	t.Helper()
	l, err := s.ListConsents(rctx(t), user)
	if err != nil {
		t.Fatalf("ListConsents: %v", err)
	}
	out := []string{}
	for _, c := range l {
		if c.UserID != user {
			t.Fatalf("listed a consent of %q for %q", c.UserID, user)
		}
		out = append(out, c.ClientID)
	}
	return out
}

// testConsents: scopes come back sorted without duplicates, a second put
// replaces the first, the list is newest first.
func testConsents(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	other := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	for _, id := range []string{"app-a", "app-b"} {
		mustClient(t, s, id)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600))
	steps := []struct {
		name       string
		put        store.Consent
		wantScopes []string
	}{
		{"first grant", store.Consent{UserID: u.ID, ClientID: "app-a", Scopes: []string{"profile", "openid", "email", "openid"}, GrantedAt: t0},
			[]string{"email", "openid", "profile"}},
		{"replace with fewer scopes", store.Consent{UserID: u.ID, ClientID: "app-a", Scopes: []string{"openid"}, GrantedAt: t0.Add(time.Hour)},
			[]string{"openid"}},
		{"no scopes at all", store.Consent{UserID: u.ID, ClientID: "app-a", Scopes: nil, GrantedAt: t0.Add(2 * time.Hour)},
			[]string{}},
	}
	for _, st := range steps {
		if err := s.PutConsent(c, st.put); err != nil {
			t.Fatalf("%s: PutConsent: %v", st.name, err)
		}
		got := getConsent(t, s, u.ID, "app-a")
		want := store.Consent{UserID: u.ID, ClientID: "app-a", Scopes: st.wantScopes, GrantedAt: st.put.GrantedAt.UTC().Truncate(time.Microsecond)}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: GetConsent = %+v, want %+v", st.name, got, want)
		}
	}
	if err := s.PutConsent(c, store.Consent{UserID: u.ID, ClientID: "app-b", Scopes: []string{"openid"}, GrantedAt: t0.Add(3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutConsent(c, store.Consent{UserID: other.ID, ClientID: "app-a", Scopes: []string{"openid"}}); err != nil {
		t.Fatal(err)
	}
	if got := getConsent(t, s, other.ID, "app-a"); got.GrantedAt.IsZero() {
		t.Fatalf("zero GrantedAt not filled by the store's clock")
	}
	if got, want := consentClients(t, s, u.ID), []string{"app-b", "app-a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListConsents = %v, want %v (newest first)", got, want)
	}
	if err := s.DeleteConsent(c, u.ID, "app-b"); err != nil {
		t.Fatalf("DeleteConsent: %v", err)
	}
	if _, err := s.GetConsent(c, u.ID, "app-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetConsent after delete: %v, want ErrNotFound", err)
	}
	if got, want := consentClients(t, s, u.ID), []string{"app-a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListConsents after delete = %v, want %v", got, want)
	}
	if got := consentClients(t, s, other.ID); !reflect.DeepEqual(got, []string{"app-a"}) {
		t.Fatalf("the other user's consents = %v", got)
	}
}

func testConsentsFail(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	u := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	mustClient(t, s, "app-a")
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"get unknown", func() error { _, err := s.GetConsent(c, u.ID, "app-a"); return err }(), store.ErrNotFound},
		{"delete unknown", s.DeleteConsent(c, u.ID, "app-a"), store.ErrNotFound},
		{"put for an unknown user", s.PutConsent(c, store.Consent{UserID: "nobody", ClientID: "app-a", Scopes: []string{"openid"}}), store.ErrNotFound},
		{"put for an unknown client", s.PutConsent(c, store.Consent{UserID: u.ID, ClientID: "nothing", Scopes: []string{"openid"}}), store.ErrNotFound},
		{"put without a client", s.PutConsent(c, store.Consent{UserID: u.ID}), sqlstore.ErrInvalidConsent},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, tc.err, tc.want)
	}
	if got := consentClients(t, s, u.ID); len(got) != 0 {
		t.Fatalf("refused puts stored %v", got)
	}
}

// testConsentsCascade: deleting a user or a client deletes their consents
// and nobody else's.
func testConsentsCascade(t *testing.T, s *sqlstore.Store) {
	syncDefaultRoles(t, s)
	c := rctx(t)
	ann := mustCreateUser(t, s, newUser("ann@example.com", "user"))
	bob := mustCreateUser(t, s, newUser("bob@example.com", "user"))
	for _, id := range []string{"app-a", "app-b"} {
		mustClient(t, s, id)
	}
	for _, u := range []string{ann.ID, bob.ID} {
		for _, cl := range []string{"app-a", "app-b"} {
			if err := s.PutConsent(c, store.Consent{UserID: u, ClientID: cl, Scopes: []string{"openid"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.DeleteUser(c, ann.ID); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if got := consentClients(t, s, ann.ID); len(got) != 0 {
		t.Fatalf("a deleted user's consents remain: %v", got)
	}
	if err := s.DeleteClient(c, "app-a"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	if _, err := s.GetConsent(c, bob.ID, "app-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("consent to a deleted client: %v, want ErrNotFound", err)
	}
	if got := consentClients(t, s, bob.ID); !reflect.DeepEqual(got, []string{"app-b"}) {
		t.Fatalf("bob's consents = %v, want [app-b]", got)
	}
}
