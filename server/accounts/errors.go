package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// ErrWeakPassword answers a new password the password rules refuse (400);
// its description says why.
var ErrWeakPassword = &apierr.Error{Code: "weak_password", Status: http.StatusBadRequest,
	Description: "The password does not meet the password rules."}

// Errors of the account operations, for errors.Is and as answers.
var (
	errUserNotFound       = apierr.ErrNotFound.WithDescription("No user has this id.")
	errInviteNotFound     = apierr.ErrNotFound.WithDescription("No invite has this id.")
	errClientNotFound     = apierr.ErrNotFound.WithDescription("No client has this id.")
	errCurrentPassword    = apierr.ErrInvalidGrant.WithDescription("The current password is incorrect.")
	errActorUnknown       = apierr.ErrInvalidToken.WithDescription("The user of this token no longer exists.")
	errActorInactive      = apierr.ErrForbidden.WithDescription("Your account is deactivated.")
	errSamePassword       = ErrWeakPassword.WithDescription("The new password must differ from the current one.")
	errAccountExists      = apierr.ErrConflict.WithDescription("An account with this email address already exists.")
	errFirstPartyDeletion = apierr.ErrConflict.WithDescription("The built-in first-party client cannot be deleted.")
	// errInvitePasswordRequired answers an acceptance without a password
	// once the invite is known to be usable (AcceptInvite).
	errInvitePasswordRequired = apierr.ErrInvalidRequest.WithDescription("A password is required to accept the invitation.")
	// errInviteNoLongerValid answers an invite whose inviter no longer
	// stands behind it (inviterStands): unusable, as an expired or revoked
	// one is. It says no more, so the holder of the link learns nothing of
	// the inviter's account; the audit event says why.
	errInviteNoLongerValid = apierr.ErrOneTimeTokenInvalid.WithDescription("This invitation is no longer valid. Ask for a new one.")
)

// weakPassword turns a refusal of the password rules into a 400 weak_password
// whose description is the rule's reason.
func weakPassword(err error) error {
	return ErrWeakPassword.WithDescription("%s", apierr.Sentence(err.Error())).WithCause(err)
}

// ceilingErr answers a refusal of the privilege ceiling (403) or an unknown
// role (400).
func ceilingErr(err error) error {
	var ce *policy.CeilingError
	var ue *policy.UnknownRoleError
	switch {
	case errors.As(err, &ce):
		return apierr.ErrForbidden.WithDescription("%s", apierr.Sentence(ce.Reason)).WithCause(err)
	case errors.As(err, &ue):
		return apierr.ErrInvalidRequest.WithDescription("The policy has no role %q.", ue.Role).WithCause(err)
	}
	return internal("check the privilege ceiling", err)
}

// storeErr is apierr.FromStore: a store failure as an answer.
func storeErr(what string, err error, notFound error) error {
	return apierr.FromStore(what, err, notFound)
}

// internal is a 500 whose cause is logged, never sent.
func internal(what string, err error) error {
	return apierr.ErrServer.WithCause(fmt.Errorf("%s: %w", what, err))
}

// hashPassword hashes a new password: the one call of the hasher every
// account operation makes. A hash that never ran because the request ended
// while it waited for a hashing slot (password.ErrBusy, the slots taken by
// other hashes) is 503 temporarily_unavailable, as the password check
// answers it; the error handler records it as 499 when the client went
// away (apierr.ClientGone). Any other failure is a 500.
func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	hash, err := s.hasher.Hash(ctx, pw)
	switch {
	case err == nil:
		return hash, nil
	case errors.Is(err, password.ErrBusy):
		return "", apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("hash password: %w", err))
	}
	return "", internal("hash password", err)
}

// oneTimeTokenErr answers a one-time token (invite, reset, verification)
// that cannot be used: 400 invalid_token saying why. Saying that a link
// expired or was used reveals nothing about other accounts: only the holder
// of the token learns it.
func oneTimeTokenErr(kind string, err error) error {
	var ae *apierr.Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, store.ErrNotFound):
		return apierr.ErrOneTimeTokenInvalid.WithDescription("This %s link is not valid. Check that you copied the whole link, or ask for a new one.", kind)
	case errors.Is(err, store.ErrTokenExpired):
		return apierr.ErrOneTimeTokenInvalid.WithDescription("This %s link has expired. Ask for a new one.", kind)
	case errors.Is(err, store.ErrTokenUsed):
		return apierr.ErrOneTimeTokenInvalid.WithDescription("This %s link has already been used or was replaced by a newer one.", kind)
	case errors.Is(err, store.ErrTokenRevoked):
		return apierr.ErrOneTimeTokenInvalid.WithDescription("This %s link has been revoked.", kind)
	}
	return storeErr("redeem "+kind+" link", err, nil)
}
