package sqlstore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// recordingHooks records the user writes announced to it; with fail set,
// every BeginUserWrite fails (Redis unreachable).
type recordingHooks struct {
	mu           sync.Mutex
	begun, ended []string
	fail         bool
}

func (h *recordingHooks) BeginUserWrite(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail {
		return errors.New("redis: connection refused")
	}
	h.begun = append(h.begun, id)
	return nil
}

func (h *recordingHooks) EndUserWrite(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = append(h.ended, id)
	return nil
}

// TestUserWritesAnnounced: every store method that changes what GetUser
// returns begins the write with the hooks before it commits and ends it
// after, once per call; when the beginning fails (Redis unreachable), the
// write still lands and the end is still called (UserWriteHooks). A
// method that writes users and is missing here would let the instances'
// copies of users (store/usercache) go stale.
func TestUserWritesAnnounced(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, ctx := openWithRoles(t, b.url(t), store.Role{Name: "admin", Level: 50}, store.Role{Name: "user", Level: 10})
			tenant := store.Tenant{Slug: "acme", Name: "Acme", Active: true}
			if err := s.CreateTenant(ctx, &tenant); err != nil {
				t.Fatal(err)
			}
			n := 0
			newUser := func(t *testing.T) store.User {
				n++
				u := store.User{Email: "w" + string(rune('a'+n)) + "@example.com", Name: "before", PasswordHash: "$argon2id$x",
					Active: true, Roles: []string{"user"}}
				if err := s.CreateUser(ctx, &u); err != nil {
					t.Fatal(err)
				}
				return u
			}
			hash := func(v string) []byte { h := sha256.Sum256([]byte(v)); return h[:] }
			now := time.Now()

			for _, tc := range []struct {
				name string
				// prepare runs before the hooks are set; write is the
				// announced call.
				prepare func(t *testing.T, u store.User)
				write   func(u store.User) error
			}{
				{"UpdateUser", nil, func(u store.User) error {
					_, err := s.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Name = "after"; return nil })
					return err
				}},
				{"UpdateUserRevokingKeys", nil, func(u store.User) error {
					_, _, err := s.UpdateUserRevokingKeys(ctx, u.ID, func(x *store.User) error { x.Name = "after"; return nil }, u.ID, now)
					return err
				}},
				{"GrantRole", nil, func(u store.User) error { _, err := s.GrantRole(ctx, u.ID, "admin"); return err }},
				{"RevokeRole", nil, func(u store.User) error { _, err := s.RevokeRole(ctx, u.ID, "user"); return err }},
				{"DeleteUser", nil, func(u store.User) error { return s.DeleteUser(ctx, u.ID) }},
				{"GrantTenantRole", nil, func(u store.User) error {
					_, err := s.GrantTenantRole(ctx, tenant.ID, u.ID, "admin")
					return err
				}},
				{"RevokeTenantRole", func(t *testing.T, u store.User) {
					if _, err := s.GrantTenantRole(ctx, tenant.ID, u.ID, "admin"); err != nil {
						t.Fatal(err)
					}
				}, func(u store.User) error { _, err := s.RevokeTenantRole(ctx, tenant.ID, u.ID, "admin"); return err }},
				{"RemoveTenantMember", func(t *testing.T, u store.User) {
					if _, err := s.GrantTenantRole(ctx, tenant.ID, u.ID, "admin"); err != nil {
						t.Fatal(err)
					}
				}, func(u store.User) error { _, err := s.RemoveTenantMember(ctx, tenant.ID, u.ID); return err }},
				{"AcceptTenantInvite", func(t *testing.T, u store.User) {
					inv := store.Invite{Email: u.Email, Role: "user", TokenHash: hash("invite-" + u.ID), InvitedBy: u.ID,
						ExpiresAt: now.Add(time.Hour), TenantID: tenant.ID}
					if err := s.CreateInvite(ctx, &inv, nil); err != nil {
						t.Fatal(err)
					}
				}, func(u store.User) error {
					_, err := s.AcceptTenantInvite(ctx, hash("invite-"+u.ID), now, u.ID)
					return err
				}},
				{"ConsumeUserToken", func(t *testing.T, u store.User) {
					tok := store.UserToken{UserID: u.ID, Purpose: store.PurposeVerifyEmail, TokenHash: hash("verify-" + u.ID),
						ExpiresAt: now.Add(time.Hour)}
					if err := s.CreateUserToken(ctx, &tok); err != nil {
						t.Fatal(err)
					}
				}, func(u store.User) error {
					_, err := s.ConsumeUserToken(ctx, store.PurposeVerifyEmail, hash("verify-"+u.ID), now,
						func(x *store.User) error { x.EmailVerified = true; return nil })
					return err
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for _, fail := range []bool{false, true} {
						u := newUser(t)
						if tc.prepare != nil {
							tc.prepare(t, u)
						}
						before, err := s.GetUser(ctx, u.ID)
						if err != nil {
							t.Fatal(err)
						}
						h := &recordingHooks{fail: fail}
						s.SetUserWriteHooks(h)
						err = tc.write(u)
						s.SetUserWriteHooks(nil)
						if err != nil {
							t.Fatalf("beginning fails %v: %v", fail, err)
						}
						wantBegun := []string{u.ID}
						if fail {
							wantBegun = nil
						}
						if !slices.Equal(h.begun, wantBegun) || !slices.Equal(h.ended, []string{u.ID}) {
							t.Fatalf("beginning fails %v: begun %v, ended %v; want %v and %v", fail, h.begun, h.ended, wantBegun, u.ID)
						}
						if after, err := s.GetUser(ctx, u.ID); err == nil && sameUser(after, before) {
							t.Fatalf("the write changed nothing GetUser returns: the case tests nothing")
						}
					}
				})
			}
		})
	}
}

// sameUser compares what GetUser returns.
func sameUser(a, b store.User) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Active == b.Active && a.EmailVerified == b.EmailVerified &&
		slices.Equal(a.Roles, b.Roles) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		(a.LastLoginAt == nil) == (b.LastLoginAt == nil)
}

var _ sqlstore.UserWriteHooks = (*recordingHooks)(nil)

// TestRecordLoginUnannounced: recording a login is the one user write the
// hooks do not hear of (a login leaves every instance's copies of the user
// valid), so it must change nothing but the last-login time, which the
// copies do not serve (usercache).
func TestRecordLoginUnannounced(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s, ctx := openWithRoles(t, b.url(t), store.Role{Name: "user", Level: 10})
			u := store.User{Email: "login@example.com", Name: "n", PasswordHash: "$argon2id$x", Active: true, Roles: []string{"user"}}
			if err := s.CreateUser(ctx, &u); err != nil {
				t.Fatal(err)
			}
			before, err := s.GetUser(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			h := &recordingHooks{}
			s.SetUserWriteHooks(h)
			at := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
			err = s.RecordLogin(ctx, &store.AuditEvent{Action: "login.succeeded", ActorID: u.ID, TargetID: u.ID, Time: at})
			s.SetUserWriteHooks(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.begun)+len(h.ended) != 0 {
				t.Fatalf("RecordLogin announced a write: begun %v, ended %v", h.begun, h.ended)
			}
			after, err := s.GetUser(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.LastLoginAt == nil || !after.LastLoginAt.Equal(at) {
				t.Fatalf("last login %v, want %v", after.LastLoginAt, at)
			}
			after.LastLoginAt = before.LastLoginAt
			if !reflect.DeepEqual(after, before) {
				t.Fatalf("RecordLogin changed more than the last-login time:\n%+v\n%+v", before, after)
			}
		})
	}
}

// openWithRoles opens a migrated store at url with roles synced, and the
// test's context.
func openWithRoles(t *testing.T, url string, roles ...store.Role) (*sqlstore.Store, context.Context) {
	t.Helper()
	s := open(t, url)
	ctx := testCtx(t)
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncRoles(ctx, roles); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}
