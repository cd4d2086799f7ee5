package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// MFA is the second-factor service (*mfa.Service): the parts the account
// operations use.
type MFA interface {
	Begin(ctx context.Context, u store.User, factors *mfa.Summary, counted ratelimit.Counted, clientID, scope, tenant string, authTime time.Time,
		first []string) (*mfa.Challenge, error)
	Peek(ctx context.Context, token, clientID string) (mfa.Pending, error)
	Status(ctx context.Context, userID string) (mfa.Status, error)
	Summary(ctx context.Context, userID string) (mfa.Summary, error)
	StartTOTP(ctx context.Context, u store.User, m mfa.Meta) (mfa.Enrolment, error)
	ConfirmTOTP(ctx context.Context, u store.User, code string, m mfa.Meta) ([]string, error)
	RemoveTOTP(ctx context.Context, userID string, m mfa.Meta) error
	RegenerateRecoveryCodes(ctx context.Context, userID string, m mfa.Meta) ([]string, error)
	FirstRecoveryCodes(ctx context.Context, userID string, m mfa.Meta) ([]string, error)
	Reset(ctx context.Context, userID string, m mfa.Meta) error
	VoidRecoveryCodes(ctx context.Context, userID string, m mfa.Meta) error
}

// Passkeys runs the WebAuthn registration ceremony and removes credentials
// (*passkeys.Service).
type Passkeys interface {
	BeginRegistration(ctx context.Context, u store.User, m mfa.Meta) (optionsJSON []byte, handle string, err error)
	FinishRegistration(ctx context.Context, u store.User, handle, name string, responseJSON []byte, m mfa.Meta) (store.WebAuthnCredential, error)
	Remove(ctx context.Context, userID, id string, m mfa.Meta) error
}

// Errors of the MFA operations.
var (
	errMFAUnavailable = apierr.ErrTemporarilyUnavailable.WithDescription("Multi-factor authentication is not available right now.")
	errNoPasskeys     = apierr.ErrInvalidRequest.WithDescription(
		"Passkeys are not available on this server: it has no WebAuthn relying party (set PORTCULLIS_WEBAUTHN_RP_ID).")
	errMFATokenNotForEnrolment = apierr.ErrForbidden.WithDescription(
		"An mfa_token is accepted here only while its login must enrol a second factor; finish the login at the token endpoint.")
	errMFATokenEnrolled = apierr.ErrForbidden.WithDescription(
		"A second factor is enrolled already: sign in with it to change your factors.")
	errTOTPConfirmed = apierr.ErrConflict.WithDescription(
		"An authenticator app is set up already; remove it first (DELETE /auth/mfa/totp with your current password).")
	errNoTOTPPending = apierr.ErrConflict.WithDescription(
		"No authenticator app enrolment is waiting for its code; start again with POST /auth/mfa/totp.")
	errNoTOTP      = apierr.ErrNotFound.WithDescription("No authenticator app is set up for your account.")
	errNotEnrolled = apierr.ErrConflict.WithDescription(
		"Recovery codes come with a second factor: set up an authenticator app or a passkey first.")
	errBadTOTPCode = apierr.ErrInvalidRequest.WithDescription(
		"The code is wrong or was used already; enter the current code from your authenticator app.")
	errPasswordRequired = apierr.ErrInvalidRequest.WithDescription("current_password is required.")
	errSignInAgain      = apierr.ErrInsufficientUserAuthentication.WithDescription(
		"Changing your second factors needs a sign-in within the last five minutes: sign in again, then repeat it.").
		WithStepUp(ReauthWindow, "")
	errSignInWithFactor = apierr.ErrInsufficientUserAuthentication.WithDescription(
		"Changing your second factors needs a sign-in with one of them: sign in again with your second factor, then repeat it.").
		WithStepUp(0, mfa.ACRMFA)
	errSignInAgainWithFactor = apierr.ErrInsufficientUserAuthentication.WithDescription(
		"Changing your second factors needs a sign-in with one of them within the last five minutes: sign in again, then repeat it.").
		WithStepUp(ReauthWindow, mfa.ACRMFA)
	// ErrSignInToChangePassword refuses a password change proved by the
	// password alone (the hosted /change-password page) for an account
	// with a second factor.
	ErrSignInToChangePassword = apierr.ErrInvalidRequest.WithDescription(
		"This account uses two-step verification: sign in, then change your password from your account (or reset it by email).")
)

// passwordIsNotEnough refuses to let the password alone change what
// protects an account that has a second factor: the person proves both
// factors by signing in first (the bearer path), or resets the password by
// email. Fails closed when the factors cannot be read.
func (s *Service) passwordIsNotEnough(ctx context.Context, u store.User) error {
	if s.mfa == nil {
		return nil
	}
	st, err := s.mfa.Summary(ctx, u.ID)
	if err != nil {
		return errMFAUnavailable.WithCause(err)
	}
	if st.Enrolled() {
		return ErrSignInToChangePassword
	}
	return nil
}

// MFATokenActor is the actor of an mfa_token presented as the bearer of the
// enrolment endpoints (StartTOTP, ConfirmTOTP, nothing else): the token's
// login must be one whose enrolment the policy requires
// (mfa.Pending.EnrollmentRequired), else 403; an unknown, expired, used or
// exhausted token is 401 invalid_token. The token is not used up: after the
// enrolment the login takes a new password grant. Nothing here reads the
// user's cut-off: the factor it enrols is kept only if the sessions were
// not ended after the password step (keptFactor), so the old password
// typed before a reset cannot give the account a factor afterwards.
func (s *Service) MFATokenActor(ctx context.Context, token string, m Meta) (Actor, error) {
	if s.mfa == nil {
		return Actor{}, errMFAUnavailable
	}
	p, err := s.mfa.Peek(ctx, token, "")
	switch {
	case errors.Is(err, mfa.ErrInvalidToken):
		return Actor{}, apierr.ErrInvalidToken.WithDescription("The access token or mfa_token is invalid, expired or used.").WithCause(err)
	case err != nil:
		return Actor{}, mfaErr("read the mfa_token", err)
	case !p.EnrollmentRequired:
		return Actor{}, errMFATokenNotForEnrolment
	}
	m.ClientID = p.ClientID
	return Actor{ID: p.UserID, Meta: m, mfaEnrolment: true, loginAt: p.AuthTime}, nil
}

// ReauthWindow is how recent a sign-in must be for what it changes without
// the password: a write of one's own second factors (recentProof) and the
// console's key revocation, secret rotation and MFA reset.
const ReauthWindow = 5 * time.Minute

// mfaUse is what an MFA operation does with the actor's factors.
type mfaUse uint8

const (
	// mfaRead reads them, or removes one with the current password.
	mfaRead mfaUse = iota
	// mfaWrite adds one or makes recovery codes (recentProof).
	mfaWrite
	// mfaEnrol is mfaWrite that an mfa_token's actor may also do
	// (MFATokenActor): TOTP enrolment.
	mfaEnrol
)

// loadMFASelf is loadSelf for the MFA operations, which also need the MFA
// service. An mfa_token's actor (MFATokenActor) passes only for mfaEnrol,
// and only while the user has no second factor (checked now, not when the
// token was issued: an mfa_token must never replace a factor). Any other
// actor's write (mfaWrite, mfaEnrol) needs recentProof: it is the one
// check of every write of a factor or of recovery codes, on the API and on
// /account/security alike.
func (s *Service) loadMFASelf(ctx context.Context, actor Actor, use mfaUse) (store.User, error) {
	if s.mfa == nil {
		return store.User{}, errMFAUnavailable
	}
	if actor.mfaEnrolment && use != mfaEnrol {
		return store.User{}, errMFATokenNotForEnrolment
	}
	u, err := s.loadSelf(ctx, actor)
	if err != nil || use == mfaRead {
		return u, err
	}
	st, err := s.mfa.Summary(ctx, u.ID)
	if err != nil {
		return store.User{}, mfaErr("read the second factors", err)
	}
	if actor.mfaEnrolment {
		if st.Enrolled() {
			return store.User{}, errMFATokenEnrolled
		}
		return u, nil
	}
	if err := s.recentProof(actor, st.Enrolled()); err != nil {
		return store.User{}, err
	}
	return u, nil
}

// recentProof refuses a write of the actor's second factors unless their
// login proved the whole account just now: it authenticated within
// ReauthWindow and, when the user has a second factor (enrolled), with it
// (amr holds "mfa"). Otherwise a stolen access token or browser session
// (a token's auth_time survives refresh) could take ten working recovery
// codes, voiding the owner's, or add its holder's passkey, neither of which
// a password reset or the end of every session removes. The refusal is RFC
// 9470's 401 insufficient_user_authentication with max_age and/or
// acr_values="mfa"; the hosted page sends the person to sign in again.
func (s *Service) recentProof(actor Actor, enrolled bool) error {
	at, amr := actor.login()
	stale := at.IsZero() || s.now().Sub(at) > ReauthWindow
	weak := enrolled && !slices.Contains(amr, mfa.AMRMFA)
	switch {
	case stale && weak:
		return errSignInAgainWithFactor
	case stale:
		return errSignInAgain
	case weak:
		return errSignInWithFactor
	}
	return nil
}

func mfaMeta(actorID string, m Meta) mfa.Meta {
	return mfa.Meta{ActorID: actorID, IP: m.IP, UserAgent: m.UserAgent, ClientID: m.ClientID}
}

// MFAStatus is what GET /auth/mfa shows.
type MFAStatus struct {
	TOTP              bool      `json:"totp"`
	WebAuthn          []Passkey `json:"webauthn"`
	RecoveryCodesLeft int       `json:"recovery_codes_left"`
}

// Passkey is a registered WebAuthn credential as the API shows it.
type Passkey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

// ViewPasskey is the API view of a credential.
func ViewPasskey(c store.WebAuthnCredential) Passkey {
	return Passkey{ID: c.ID, Name: c.Name, CreatedAt: c.CreatedAt, LastUsedAt: c.LastUsedAt}
}

// OwnMFA returns the actor's second factors.
func (s *Service) OwnMFA(ctx context.Context, actor Actor) (MFAStatus, error) {
	u, err := s.loadMFASelf(ctx, actor, mfaRead)
	if err != nil {
		return MFAStatus{}, err
	}
	st, err := s.mfa.Status(ctx, u.ID)
	if err != nil {
		return MFAStatus{}, mfaErr("read the second factors", err)
	}
	out := MFAStatus{TOTP: st.TOTP, WebAuthn: make([]Passkey, 0, len(st.WebAuthn)), RecoveryCodesLeft: st.RecoveryCodesLeft}
	for _, c := range st.WebAuthn {
		out.WebAuthn = append(out.WebAuthn, ViewPasskey(c))
	}
	return out, nil
}

// StartTOTP starts enrolling an authenticator app for the actor (a bearer
// token or browser session of a recent sign-in, recentProof; or an
// mfa_token whose enrolment is required): a new secret, its
// otpauth:// URI and a QR code. It changes nothing until ConfirmTOTP. A
// confirmed app must be removed first (409): replacing it would remove a
// factor without the password.
func (s *Service) StartTOTP(ctx context.Context, actor Actor) (mfa.Enrolment, error) {
	u, err := s.loadMFASelf(ctx, actor, mfaEnrol)
	if err != nil {
		return mfa.Enrolment{}, err
	}
	st, err := s.mfa.Summary(ctx, u.ID)
	if err != nil {
		return mfa.Enrolment{}, mfaErr("read the second factors", err)
	}
	if st.TOTP {
		return mfa.Enrolment{}, errTOTPConfirmed
	}
	en, err := s.mfa.StartTOTP(ctx, u, mfaMeta(u.ID, actor.Meta))
	if err != nil {
		return mfa.Enrolment{}, mfaErr("start a TOTP enrolment", err)
	}
	return en, nil
}

// ConfirmTOTP confirms the actor's pending enrolment with a first code and
// returns the ten recovery codes (shown once). A wrong or used code is 400
// and changes nothing; no pending enrolment, or a confirmed app, is 409. A
// token revoked, or an mfa_token's login ended, before the app was
// confirmed keeps no app (keptFactor).
func (s *Service) ConfirmTOTP(ctx context.Context, actor Actor, code string) ([]string, error) {
	u, err := s.loadMFASelf(ctx, actor, mfaEnrol)
	if err != nil {
		return nil, err
	}
	if code == "" || len(code) > 16 {
		return nil, apierr.ErrInvalidRequest.WithDescription("code is required: the 6 digits your authenticator app shows.")
	}
	st, err := s.mfa.Summary(ctx, u.ID)
	if err != nil {
		return nil, mfaErr("read the second factors", err)
	}
	if st.TOTP {
		return nil, errTOTPConfirmed
	}
	codes, err := s.mfa.ConfirmTOTP(ctx, u, code, mfaMeta(u.ID, actor.Meta))
	switch {
	case errors.Is(err, mfa.ErrBadCode):
		return nil, errBadTOTPCode.WithCause(err)
	case errors.Is(err, mfa.ErrNotEnrolled):
		return nil, errNoTOTPPending.WithCause(err)
	case err != nil:
		return nil, mfaErr("confirm a TOTP enrolment", err)
	}
	if err := s.keptFactor(ctx, actor, u.ID, true, func(ctx context.Context, m mfa.Meta) error {
		return s.mfa.RemoveTOTP(ctx, u.ID, m)
	}); err != nil {
		return nil, err
	}
	return codes, nil
}

// keptFactor is the last step of every write of a second factor or of
// recovery codes made for the actor (ConfirmTOTP, FinishPasskeyRegistration,
// RegenerateRecoveryCodes): madeWithLiveToken, whose undo removes the
// factor written (remove, nil for codes alone) and, when the write showed
// recovery codes (codes), voids the user's codes, audited mfa.removed via
// token_revoked. Without it a stolen access token, its request held back
// past the victim's password reset or an admin's MFA reset, enrolled its
// holder's authenticator or passkey (locking the victim out of a login
// that now asks for it) or took working recovery codes. The codes are
// voided whole: those the write replaced are gone already, and the person
// makes new ones from a live session.
func (s *Service) keptFactor(ctx context.Context, actor Actor, userID string, codes bool, remove func(context.Context, mfa.Meta) error) error {
	return s.madeWithLiveToken(ctx, actor, "a second factor", func(ctx context.Context) error {
		m := mfaMeta(userID, actor.Meta)
		m.Via = viaTokenRevoked
		var errs []error
		if remove != nil {
			if err := remove(ctx, m); err != nil {
				errs = append(errs, fmt.Errorf("remove the factor of %s: %w", userID, err))
			}
		}
		if codes {
			if err := s.mfa.VoidRecoveryCodes(ctx, userID, m); err != nil {
				errs = append(errs, fmt.Errorf("void the recovery codes of %s: %w", userID, err))
			}
		}
		return errors.Join(errs...)
	})
}

// RemoveTOTP removes the actor's authenticator app after checking their
// current password (the one password check, under the login throttle; a
// wrong one is 400 invalid_grant and removes nothing).
func (s *Service) RemoveTOTP(ctx context.Context, actor Actor, currentPassword string) error {
	u, err := s.loadMFASelf(ctx, actor, mfaRead)
	if err != nil {
		return err
	}
	if err := s.checkCurrentPassword(ctx, actor, u.ID, currentPassword, "mfa.removed"); err != nil {
		return err
	}
	err = s.mfa.RemoveTOTP(ctx, u.ID, mfaMeta(u.ID, actor.Meta))
	switch {
	case errors.Is(err, mfa.ErrNotEnrolled), errors.Is(err, store.ErrNotFound):
		return errNoTOTP
	case err != nil:
		return mfaErr("remove the TOTP factor", err)
	}
	return nil
}

// RegenerateRecoveryCodes replaces the actor's recovery codes with ten new
// ones (shown once), for a recent sign-in made with the second factor
// (recentProof, else 401). Without a second factor it is 409. A token revoked
// before they were written gets none, and they are voided (keptFactor).
func (s *Service) RegenerateRecoveryCodes(ctx context.Context, actor Actor) ([]string, error) {
	u, err := s.loadMFASelf(ctx, actor, mfaWrite)
	if err != nil {
		return nil, err
	}
	codes, err := s.mfa.RegenerateRecoveryCodes(ctx, u.ID, mfaMeta(u.ID, actor.Meta))
	switch {
	case errors.Is(err, mfa.ErrNotEnrolled):
		return nil, errNotEnrolled.WithCause(err)
	case err != nil:
		return nil, mfaErr("regenerate recovery codes", err)
	}
	if err := s.keptFactor(ctx, actor, u.ID, true, nil); err != nil {
		return nil, err
	}
	return codes, nil
}

// BeginPasskeyRegistration starts registering a passkey or security key for
// the actor: the options for navigator.credentials.create and the
// ceremony's handle. Like FinishPasskeyRegistration it needs a recent
// sign-in, made with the second factor when there is one (recentProof). The
// ceremony counts against the caller's address budget (429 past it).
func (s *Service) BeginPasskeyRegistration(ctx context.Context, actor Actor) (optionsJSON []byte, handle string, err error) {
	u, err := s.loadPasskeySelf(ctx, actor, mfaWrite)
	if err != nil {
		return nil, "", err
	}
	opts, handle, err := s.passkeys.BeginRegistration(ctx, u, mfaMeta(u.ID, actor.Meta))
	if err != nil {
		return nil, "", mfaErr("begin a passkey registration", err)
	}
	return opts, handle, nil
}

// RegisteredPasskey is a registration's answer: the credential and, when
// the person had no unused recovery code (a first factor), ten recovery
// codes, shown this once.
type RegisteredPasskey struct {
	Passkey
	RecoveryCodes []string `json:"recovery_codes,omitempty"`
}

// FinishPasskeyRegistration verifies the browser's answer and stores the
// credential under name. A person without unused recovery codes gets ten
// (mfa.Service.FirstRecoveryCodes): a lost first passkey must not leave an
// administrator's reset as the only way in. Should storing them fail, the
// passkey is registered all the same (it is stored) and answered without
// codes; the person can make them on the security page. A token revoked
// before the passkey was stored keeps none (keptFactor).
func (s *Service) FinishPasskeyRegistration(ctx context.Context, actor Actor, handle, name string, responseJSON []byte) (RegisteredPasskey, error) {
	u, err := s.loadPasskeySelf(ctx, actor, mfaWrite)
	if err != nil {
		return RegisteredPasskey{}, err
	}
	m := mfaMeta(u.ID, actor.Meta)
	c, err := s.passkeys.FinishRegistration(ctx, u, handle, name, responseJSON, m)
	if err != nil {
		return RegisteredPasskey{}, mfaErr("finish a passkey registration", err)
	}
	out := RegisteredPasskey{Passkey: ViewPasskey(c)}
	if out.RecoveryCodes, err = s.mfa.FirstRecoveryCodes(ctx, u.ID, m); err != nil {
		s.log.Error("a passkey was registered without its first recovery codes", "user_id", u.ID, "err", err)
	}
	if err := s.keptFactor(ctx, actor, u.ID, out.RecoveryCodes != nil, func(ctx context.Context, m mfa.Meta) error {
		return s.passkeys.Remove(ctx, u.ID, c.ID, m)
	}); err != nil {
		return RegisteredPasskey{}, err
	}
	return out, nil
}

// RemovePasskey removes one of the actor's passkeys after checking their
// current password; another user's id is 404.
func (s *Service) RemovePasskey(ctx context.Context, actor Actor, id, currentPassword string) error {
	u, err := s.loadPasskeySelf(ctx, actor, mfaRead)
	if err != nil {
		return err
	}
	if err := s.checkCurrentPassword(ctx, actor, u.ID, currentPassword, "mfa.removed"); err != nil {
		return err
	}
	if err := s.passkeys.Remove(ctx, u.ID, id, mfaMeta(u.ID, actor.Meta)); err != nil {
		return mfaErr("remove a passkey", err)
	}
	return nil
}

// loadPasskeySelf is loadMFASelf for the passkey operations, which also
// need the passkey service.
func (s *Service) loadPasskeySelf(ctx context.Context, actor Actor, use mfaUse) (store.User, error) {
	u, err := s.loadMFASelf(ctx, actor, use)
	if err != nil {
		return store.User{}, err
	}
	if s.passkeys == nil {
		return store.User{}, errNoPasskeys
	}
	return u, nil
}

// checkCurrentPassword is the current-password check of a factor's
// removal: the one password check (throttle, audit as failureAction).
func (s *Service) checkCurrentPassword(ctx context.Context, actor Actor, userID, password, failureAction string) error {
	if password == "" {
		return errPasswordRequired
	}
	_, err := s.checker.Check(ctx, passcheck.Attempt{UserID: userID, Password: password, IP: actor.Meta.IP,
		UserAgent: actor.Meta.UserAgent, ClientID: actor.Meta.ClientID, FailureAction: failureAction})
	switch {
	case errors.Is(err, passcheck.ErrBadCredentials):
		return errCurrentPassword
	case errors.Is(err, passcheck.ErrUnknownUser):
		return errActorUnknown
	}
	return err
}

// ResetMFA removes every second factor of a user the actor may manage (the
// privilege ceiling of the other admin user operations: strictly above
// them, never themself) and ends every session of theirs. mfa.Service
// records mfa.reset. Refused (403), nothing changes.
func (s *Service) ResetMFA(ctx context.Context, actor Actor, userID string) error {
	if s.mfa == nil {
		return errMFAUnavailable
	}
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return err
	}
	return s.endingSessions(ctx, t.ID, "MFA reset", func() error {
		if err := s.mfa.Reset(ctx, t.ID, mfaMeta(a.ID, actor.Meta)); err != nil {
			return mfaErr("reset the second factors", err)
		}
		return nil
	})
}

// mfaErr answers a failure of the MFA service: its *apierr.Error as is, a
// store that cannot be reached 503, anything else 500.
func mfaErr(what string, err error) error {
	return storeErr(what, err, nil)
}
