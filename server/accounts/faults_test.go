package accounts_test

import (
	"context"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/store"
)

// faultyStore is the instance's real store with a failure injected
// around it: fail, when set, answers a call of op before the real store
// runs it, or for "consumed" (a link redeemed) and "created_user" after
// it has.
type faultyStore struct {
	accounts.Store
	fail func(ctx context.Context, op string) error
}

func (f *faultyStore) injected(ctx context.Context, op string) error {
	if f.fail == nil {
		return nil
	}
	return f.fail(ctx, op)
}

func (f *faultyStore) ConsumeUserToken(ctx context.Context, purpose store.UserTokenPurpose, tokenHash []byte, now time.Time,
	apply func(u *store.User) error) (store.User, error) {
	u, err := f.Store.ConsumeUserToken(ctx, purpose, tokenHash, now, apply)
	if err == nil {
		if ierr := f.injected(ctx, "consumed"); ierr != nil {
			return u, ierr
		}
	}
	return u, err
}

func (f *faultyStore) RedeemPasswordReset(ctx context.Context, tokenHash []byte, now time.Time, apply func(u *store.User) error,
	vouches func(provider, email string) bool) (store.PasswordReset, error) {
	r, err := f.Store.RedeemPasswordReset(ctx, tokenHash, now, apply, vouches)
	if err == nil {
		if ierr := f.injected(ctx, "consumed"); ierr != nil {
			return r, ierr
		}
	}
	return r, err
}

func (f *faultyStore) ListFederatedIdentities(ctx context.Context, userID string) ([]store.FederatedIdentity, error) {
	if err := f.injected(ctx, "list_identities"); err != nil {
		return nil, err
	}
	return f.Store.ListFederatedIdentities(ctx, userID)
}

func (f *faultyStore) DeleteFederatedIdentity(ctx context.Context, userID, provider string) (store.FederatedIdentity, error) {
	if err := f.injected(ctx, "unlink_identity"); err != nil {
		return store.FederatedIdentity{}, err
	}
	return f.Store.DeleteFederatedIdentity(ctx, userID, provider)
}

func (f *faultyStore) CreateUser(ctx context.Context, u *store.User) error {
	if err := f.Store.CreateUser(ctx, u); err != nil {
		return err
	}
	return f.injected(ctx, "created_user")
}

func (f *faultyStore) GrantTenantRole(ctx context.Context, tenantID, userID, role string) (bool, error) {
	if err := f.injected(ctx, "grant_tenant_role"); err != nil {
		return false, err
	}
	return f.Store.GrantTenantRole(ctx, tenantID, userID, role)
}

// faultyKeys is the instance's API key service with a failure injected
// before its listing and revocation.
type faultyKeys struct {
	accounts.APIKeys
	fail func(op string) error
}

func (f *faultyKeys) List(ctx context.Context, ownerID, cursor string, limit int) (apikeys.Page, error) {
	if f.fail != nil {
		if err := f.fail("list_keys"); err != nil {
			return apikeys.Page{}, err
		}
	}
	return f.APIKeys.List(ctx, ownerID, cursor, limit)
}

func (f *faultyKeys) Revoke(ctx context.Context, ownerID, keyID string, m apikeys.Meta) error {
	if f.fail != nil {
		if err := f.fail("revoke_key"); err != nil {
			return err
		}
	}
	return f.APIKeys.Revoke(ctx, ownerID, keyID, m)
}
