package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// ForgotPassword starts a self-service reset for email. Its answer (nil, or
// a refusal that does not depend on the address being known: a malformed
// address, the rate limit) and its timing are the same whether or not an
// account exists: the lookup, the token and the email happen in a background
// job that starts once ctx is done (the request is over; at most a second
// later for a context that never ends) and is bounded by BackgroundTimeout.
// Only an active account gets an email.
func (s *Service) ForgotPassword(ctx context.Context, m Meta, email string) error {
	email, err := normaliseEmail(email)
	if err != nil {
		return err
	}
	if err := s.limit(ctx, LimitForgotPassword, m, email); err != nil {
		return err
	}
	s.background(ctx, "forgot-password", func(ctx context.Context) { s.forgotPassword(ctx, m, email) })
	return nil
}

// forgotPassword is the background half of ForgotPassword.
func (s *Service) forgotPassword(ctx context.Context, m Meta, email string) {
	u, err := s.store.GetUserByEmail(ctx, email)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.record(ctx, "password.reset_requested", store.OutcomeFailure, "", "", m,
			map[string]string{"via": "forgot", "reason": "unknown_account"})
		return
	case err != nil:
		s.log.Error("forgot password: look up the account", "err", err)
		return
	case !u.Active:
		s.record(ctx, "password.reset_requested", store.OutcomeFailure, "", u.ID, m,
			map[string]string{"via": "forgot", "reason": "inactive"})
		return
	}
	secret, link, err := s.issueUserToken(ctx, u.ID, store.PurposePasswordReset, s.cfg.ResetTTL)
	if err != nil {
		s.log.Error("forgot password: create the reset token", "user_id", u.ID, "err", err)
		return
	}
	if err := s.sendReset(ctx, u.Email, secret); err != nil {
		s.log.Error("forgot password: reset email not sent", "user_id", u.ID, "err", err)
		s.record(ctx, "password.reset_requested", store.OutcomeFailure, "", u.ID, m,
			map[string]string{"via": "forgot", "reason": "email_not_sent"})
		return
	}
	s.linkSent(ctx, link)
	s.record(ctx, "password.reset_requested", store.OutcomeSuccess, "", u.ID, m, map[string]string{"via": "forgot"})
}

// ResetSent says until when an emailed reset link works.
type ResetSent struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// RequestPasswordReset emails a reset link to a user the actor may manage
// (not a machine user: 400). Once the email went out the user's older
// reset links stop working (linkSent). When the email cannot be sent the
// answer is 503 and the older links keep working: the new link was
// received by nobody, and the next request replaces it.
func (s *Service) RequestPasswordReset(ctx context.Context, actor Actor, userID string) (ResetSent, error) {
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return ResetSent{}, err
	}
	if t.IsMachine() {
		return ResetSent{}, errMachineNoPassword
	}
	if err := s.limitMail(ctx, LimitResetPassword, t.Email); err != nil {
		return ResetSent{}, err
	}
	secret, link, err := s.issueUserToken(ctx, t.ID, store.PurposePasswordReset, s.cfg.ResetTTL)
	if err != nil {
		return ResetSent{}, storeErr("create reset token", err, errUserNotFound)
	}
	if err := s.sendReset(ctx, t.Email, secret); err != nil {
		s.record(ctx, "password.reset_requested", store.OutcomeFailure, a.ID, t.ID, actor.Meta,
			map[string]string{"via": "admin", "reason": "email_not_sent"})
		return ResetSent{}, apierr.ErrTemporarilyUnavailable.WithDescription(
			"The password reset email could not be sent, so no new link was made; any earlier link still works. Try again later.").WithCause(err)
	}
	s.linkSent(ctx, link)
	s.record(ctx, "password.reset_requested", store.OutcomeSuccess, a.ID, t.ID, actor.Meta, map[string]string{"via": "admin"})
	return ResetSent{ExpiresAt: link.ExpiresAt}, nil
}

// ResetPassword redeems a reset link once: it sets the new password (checked
// against the rules with the user's email), clears must_change_password,
// marks the email verified (the link reached it) and the password proven
// (store.User.PasswordUnproven: it was set through the mailbox), unlinks
// every upstream identity of a provider that does not vouch for that email
// (vouches), revokes the user's live API keys, all in the redemption's transaction
// (the store's RedeemPasswordReset), and ends every session of the user
// before and after it (endingSessions). A failure anywhere in it leaves
// the account as it was and the link usable (503; the retry does it all).
// A password the rules refuse leaves the link usable. A link sent
// before the password last changed (a change, a reset, a temporary
// password) or before the account was deactivated answers as a used one
// (400 invalid_token), and a link of a deactivated account as a revoked
// one: the store voids and refuses them (sqlstore's saveUserTx and
// RedeemPasswordReset), in the transaction of the write or the redemption.
//
// The link and the rules are checked before the password is hashed, so an
// unknown, used or expired link (or a weak password) costs no hash: a dry
// run of the consume that rolls back (errLinkUsable), then the hash outside
// any transaction (no row lock is held for it), then the real, atomic
// consume, which checks everything again.
func (s *Service) ResetPassword(ctx context.Context, m Meta, tok, newPassword string) error {
	if err := s.limit(ctx, LimitResetPassword, m, ""); err != nil {
		return err
	}
	const kind = "password reset"
	if !validSecret(tok) {
		return oneTimeTokenErr(kind, store.ErrNotFound)
	}
	if newPassword == "" {
		return apierr.ErrInvalidRequest.WithDescription("new_password is required.")
	}
	check := func(u *store.User) error {
		if err := s.rules.Check(newPassword, u.Email); err != nil {
			return weakPassword(err)
		}
		return nil
	}
	var userID string
	_, err := s.store.ConsumeUserToken(ctx, store.PurposePasswordReset, hashSecret(tok), s.now(), func(u *store.User) error {
		if err := check(u); err != nil {
			return err
		}
		userID = u.ID
		return errLinkUsable // roll back: this was the dry run
	})
	switch {
	case err == nil: // the store ignored apply's error: never hash or consume on that
		return internal("check reset link", errors.New("the dry run was committed"))
	case !errors.Is(err, errLinkUsable):
		return oneTimeTokenErr(kind, err)
	}
	hash, err := s.hashPassword(ctx, newPassword)
	if err != nil {
		return err
	}
	// The redemption, the unlinking and the revocation are one
	// transaction, made between the two ends of the sessions: a failure
	// leaves the account as it was and the link usable.
	var r store.PasswordReset
	if err := s.endingSessions(ctx, userID, "password reset", func() error {
		r, err = s.store.RedeemPasswordReset(ctx, hashSecret(tok), s.now(), func(u *store.User) error {
			if u.ID != userID {
				return errors.New("the reset link names another account than its dry run")
			}
			if err := check(u); err != nil {
				return err
			}
			u.PasswordHash = hash
			u.MustChangePassword = false
			u.EmailVerified = true
			u.PasswordUnproven = false // set through the mailbox
			return nil
		}, s.vouches)
		if err != nil {
			return oneTimeTokenErr(kind, err)
		}
		return nil
	}); err != nil {
		return err
	}
	u := r.User
	for _, fi := range r.Unlinked {
		s.record(ctx, "identity.unlinked", store.OutcomeSuccess, u.ID, u.ID, m,
			map[string]string{"provider": fi.Provider, "subject": fi.Subject, "via": viaPasswordReset})
	}
	s.revokedOwnKeys(ctx, u.ID, r.RevokedKeys, m)
	s.record(ctx, "password.reset", store.OutcomeSuccess, u.ID, u.ID, m, nil)
	return nil
}

// viaPasswordReset is details.via of what a password reset ends besides the
// sessions (API keys, upstream identities).
const viaPasswordReset = "password_reset"

// viaTemporaryPassword is details.via of the API keys an admin's temporary
// password revokes.
const viaTemporaryPassword = "temporary_password"

// errLinkUsable ends the dry run of ResetPassword's consume (rolling it back).
var errLinkUsable = errors.New("reset link usable (dry run)")

// SetTemporaryPassword sets a password the user must change at their next
// login (must_change_password), for a user the actor may manage (not a
// machine user: 400), ends every session of the user and, as a reset does
// and in the same order (after the sessions' end), revokes every live API
// key of theirs in the password's own transaction (the store's
// UpdateUserRevokingKeys; revokedKeys audits them api_key.revoked via
// temporary_password): an admin sets one when the password may be
// another's, and so may the keys made with it. A failure of that
// transaction leaves the old password and every key as they were (503;
// the retry does it all).
//
// A token revoked before the password was written sets none that works
// (madeWithLiveToken): the password chosen is replaced by a random one
// nobody ever sees, must_change_password stays, the user's sessions end
// again (one signed in with the chosen password in between ends too, and
// so does a password changed from it: the replacement is written whatever
// the row holds), and the answer is 401 (password.temp_set recorded as
// failed, reason token_revoked). The old password is not written back: the
// write replaced it, and putting it back over a change made in between
// could revive a password someone replaced because it leaked. The owner
// gets in with a reset link, the proof of the mailbox, or an admin sets a
// temporary password from a live session.
func (s *Service) SetTemporaryPassword(ctx context.Context, actor Actor, userID, pw string) (User, error) {
	if err := outlivesNoKey(actor); err != nil {
		return User{}, err
	}
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return User{}, err
	}
	if t.IsMachine() {
		return User{}, errMachineNoPassword
	}
	if pw == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("password is required.")
	}
	if err := s.rules.Check(pw, t.Email); err != nil {
		return User{}, weakPassword(err)
	}
	hash, err := s.hashPassword(ctx, pw)
	if err != nil {
		return User{}, err
	}
	// The password and the revocation of the keys are one transaction,
	// made between the two ends of the sessions: a failure leaves the
	// old password and the keys as they were.
	var u store.User
	var revoked []store.APIKey
	if err := s.endingSessions(ctx, t.ID, "temporary password", func() error {
		u, revoked, err = s.store.UpdateUserRevokingKeys(ctx, t.ID, func(u *store.User) error {
			u.PasswordHash = hash
			u.MustChangePassword = true
			return nil
		}, a.ID, s.now())
		if err != nil {
			return storeErr("set temporary password", err, errUserNotFound)
		}
		return nil
	}); err != nil {
		return User{}, err
	}
	s.revokedKeys(ctx, "temporary password", t.ID, revoked, keyMeta(actor, viaTemporaryPassword))
	if err := s.madeWithLiveToken(ctx, actor, "a temporary password", func(ctx context.Context) error {
		return s.unknownPassword(ctx, t.ID)
	}); err != nil {
		s.record(ctx, "password.temp_set", store.OutcomeFailure, a.ID, t.ID, actor.Meta, map[string]string{"reason": viaTokenRevoked})
		return User{}, err
	}
	s.record(ctx, "password.temp_set", store.OutcomeSuccess, a.ID, t.ID, actor.Meta, nil)
	return ViewUser(u), nil
}

// unknownPassword gives the user a password nobody holds (the hash of a
// random secret that is dropped at once), to be changed at the next login,
// and ends every session of the user: the undo of a temporary password its
// request may not keep (SetTemporaryPassword).
func (s *Service) unknownPassword(ctx context.Context, userID string) error {
	secret, err := newSecret()
	if err != nil {
		return fmt.Errorf("draw a password nobody holds: %w", err)
	}
	hash, err := s.hashPassword(ctx, secret)
	if err != nil {
		return fmt.Errorf("hash a password nobody holds: %w", err)
	}
	if _, err := s.store.UpdateUser(ctx, userID, func(u *store.User) error {
		u.PasswordHash = hash
		u.MustChangePassword = true
		return nil
	}); err != nil {
		return fmt.Errorf("replace the temporary password of %s: %w", userID, err)
	}
	if err := s.sessions.EndUserSessions(ctx, userID); err != nil {
		return fmt.Errorf("end the sessions of %s: %w", userID, err)
	}
	return nil
}

// ChangePasswordRequest is a password change by the user themself.
type ChangePasswordRequest struct {
	// Login names the account when the request carries no bearer token (the
	// change-password page); empty: the actor's own account.
	Login           string
	CurrentPassword string
	NewPassword     string
	// Scope is the requested scope of the fresh session (nil: every
	// permission the user and client may have).
	Scope []string
}

// ChangePassword changes a user's own password: the current one must match,
// the new one must pass the rules and differ from it. It clears
// must_change_password, ends every session of the user and starts a fresh
// one through the client of the presented token (the first-party client if
// that client no longer exists), in the organisation that token acted in
// (none for the pages): a session the rule of every login would refuse
// there (an organisation turned off, its client's with organisations
// off) is refused before anything changes; when the account's roles need a second
// factor, the answer after the change is 400 mfa_required with an
// mfa_token that finishes that session's login (the token service issues
// no password-only session to such roles). It accepts the restricted token of a user who must change their password,
// and refuses (403) a token exchanged from an API key, and any other token
// of a third-party application (token.ThirdPartyApp), as the other
// self-service operations do.
//
// The account is the actor's (a bearer token) or, with req.Login, the one
// that login names (the change-password page). Either way the current
// password is checked by the one password check, under the login throttle,
// and the per-address limit is spent before anything is looked up: an
// unknown or deactivated account, or a wrong password, spend the same limits
// and get the same answer (400 invalid_grant).
func (s *Service) ChangePassword(ctx context.Context, actor Actor, req ChangePasswordRequest) (token.Response, error) {
	if err := s.limit(ctx, LimitChangePassword, actor.Meta, ""); err != nil {
		return token.Response{}, err
	}
	if req.CurrentPassword == "" || req.NewPassword == "" {
		return token.Response{}, apierr.ErrInvalidRequest.WithDescription("current_password and new_password are required.")
	}
	attempt := passcheck.Attempt{Password: req.CurrentPassword, IP: actor.Meta.IP, UserAgent: actor.Meta.UserAgent,
		ClientID: actor.Meta.ClientID, FailureAction: "password.changed"}
	switch {
	case req.Login != "":
		attempt.Login, attempt.Via = req.Login, "page"
	case actor.ID == "" || len(actor.ID) > maxIDLen:
		return token.Response{}, errActorUnknown
	default:
		attempt.UserID = actor.ID
	}
	// A token exchanged from an API key never manages the account's
	// sessions, which a change ends.
	if actor.APIKey != "" {
		return token.Response{}, errKeyTokenSelfService
	}
	// The fresh session continues with the token's client, in the
	// organisation the token acted in.
	client, err := s.sessionClient(ctx, actor.ClientID)
	if err != nil {
		return token.Response{}, err
	}
	tenant := actor.Tenant
	res, err := s.checker.Check(ctx, attempt)
	switch {
	case errors.Is(err, passcheck.ErrBadCredentials):
		return token.Response{}, errCurrentPassword
	case errors.Is(err, passcheck.ErrUnknownUser):
		return token.Response{}, errActorUnknown
	case err != nil:
		return token.Response{}, err
	}
	u := res.User
	if token.ThirdPartyApp(client) && !u.MustChangePassword {
		// A third-party application's token (not the restricted one of a
		// temporary password, which only this route takes) does not act on
		// the account, and would be handed a session with every
		// permission of the user.
		return token.Response{}, errThirdPartyToken
	}
	if req.Login != "" {
		if err := s.passwordIsNotEnough(ctx, u); err != nil {
			return token.Response{}, err
		}
	}
	// The session that follows obeys the organisation rule of every login:
	// a refusal (the organisation turned off, say) changes nothing.
	if _, err := s.sessions.SessionUser(ctx, client, u, tenant); err != nil {
		return token.Response{}, err
	}
	if req.NewPassword == req.CurrentPassword {
		return token.Response{}, errSamePassword
	}
	if err := s.rules.Check(req.NewPassword, u.Email); err != nil {
		return token.Response{}, weakPassword(err)
	}
	if err := checkScope(req.Scope, s.policy.Permissions(u.Roles), client); err != nil {
		return token.Response{}, err
	}
	hash, err := s.hashPassword(ctx, req.NewPassword)
	if err != nil {
		return token.Response{}, err
	}
	oldHash := u.PasswordHash
	var updated store.User
	if err := s.endingSessions(ctx, u.ID, "password change", func() error {
		updated, err = s.store.UpdateUser(ctx, u.ID, func(cur *store.User) error {
			if cur.PasswordHash != oldHash {
				return apierr.ErrConflict.WithDescription("The password was changed at the same moment by another request; sign in again.")
			}
			cur.PasswordHash = hash
			cur.MustChangePassword = false
			return nil
		})
		if err != nil {
			return storeErr("change password", err, errActorUnknown)
		}
		return nil
	}); err != nil {
		return token.Response{}, err
	}
	actor.Meta.ClientID = client.ID
	s.record(ctx, "password.changed", store.OutcomeSuccess, u.ID, u.ID, actor.Meta, nil)
	resp, err := s.sessions.IssueForUser(ctx, client, updated, tenant, req.Scope)
	if errors.Is(err, token.ErrSecondFactorOwed) {
		// The fresh session is a password login, and the account's roles
		// there need a second factor: as after an invite's acceptance, the
		// answer is mfa_required with the mfa_token that finishes the
		// login (or enrols the factor), in the same organisation. The
		// password is changed.
		su, serr := s.sessions.SessionUser(ctx, client, updated, tenant)
		if serr != nil {
			return token.Response{}, serr
		}
		if ferr := s.loginSecondFactor(ctx, client, su, nil, ratelimit.Counted{}, tenant, req.Scope, "Your password is changed."); ferr != nil {
			return token.Response{}, ferr
		}
	}
	return resp, err
}

// sessionClient returns the client a fresh session continues with: the
// client of the presented token, or the first-party client when that client
// no longer exists.
func (s *Service) sessionClient(ctx context.Context, clientID string) (store.Client, error) {
	if clientID != "" {
		c, err := s.store.GetClient(ctx, clientID)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Client{}, storeErr("load client", err, nil)
		}
	}
	return s.firstPartyClient(ctx)
}
