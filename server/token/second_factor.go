package token

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// errSecondFactorOwed answers an issuance whose roles the policy requires
// a second factor of (mfa.required_for_level) while the login behind it
// used none: a login through the password alone, a refresh of such a
// login after the account gained such a role, a tenant switch into an
// organisation where it holds one.
var errSecondFactorOwed = apierr.ErrInvalidGrant.WithDescription(
	"A role the account holds requires a second factor, which this sign-in did not use. Sign in again with the second factor.").
	WithCause(ErrSecondFactorOwed)

// ErrSecondFactorOwed is the cause of secondFactorOwed's refusal, for a
// caller that asks for the factor instead (errors.Is): a password change
// answers mfa_required.
var ErrSecondFactorOwed = errors.New("token: a role requires a second factor the login did not use")

// secondFactorOwed is the one check every issuance of a user's tokens
// makes before it creates anything (a refresh family, a rotated token's
// answer, a switched token): nil unless roles (those the tokens are issued
// from, the organisation's when the login names one) need a second factor
// under the policy and amr, how the login proved the user, has no "mfa".
// The steps that ask for the factor (the password grant's mfa_required,
// the login page's second step) decide with the same roles first; this is
// the backstop that keeps a path that did not ask from issuing.
func (s *Service) secondFactorOwed(roles, amr []string) error {
	if s.mfa == nil || slices.Contains(amr, mfa.AMRMFA) || !s.mfa.Required(roles) {
		return nil
	}
	return errSecondFactorOwed
}

// LoginUser returns u as a login through the client clientID naming the
// organisation tenant ("": none) sees it: with organisations on, the
// roles the tokens of that login would carry (loginTenant). A tenant the
// login could not name (unknown, inactive, not a member), or an unknown
// client, leaves u as it is: the redemption of such a login refuses it
// anyway. The login page asks for the second factor of these roles.
func (s *Service) LoginUser(ctx context.Context, clientID string, u store.User, tenant string) (store.User, error) {
	if s.tenancy == nil {
		return u, nil
	}
	client, err := s.clients.GetClient(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		return u, nil
	}
	if err != nil {
		return store.User{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load client: %w", err))
	}
	lu, _, err := s.loginTenant(ctx, client, u, tenant)
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Status < 500 {
		return u, nil
	}
	if err != nil {
		return store.User{}, err
	}
	return lu, nil
}

// SecondFactorOwed reports whether a browser login of u proved by amr
// may not yet yield a code for the client clientID naming the
// organisation tenant: the roles that code's tokens would carry
// (LoginUser; none while u must change the password) need a second
// factor amr lacks, so redeeming it would be refused (secondFactorOwed).
// The authorization endpoint sends such a session back through the login
// page and its second step instead.
func (s *Service) SecondFactorOwed(ctx context.Context, clientID string, u store.User, tenant string, amr []string) (bool, error) {
	if s.mfa == nil || u.MustChangePassword || slices.Contains(amr, mfa.AMRMFA) {
		return false, nil
	}
	lu, err := s.LoginUser(ctx, clientID, u, tenant)
	if err != nil {
		return false, err
	}
	return s.secondFactorOwed(lu.Roles, amr) != nil, nil
}
