package accounts

import (
	"context"
	"errors"
	"strings"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// RegisterRequest is a public sign-up.
type RegisterRequest struct {
	Email    string
	Password string
	Name     string
}

// Register creates an account when public registration is on (else 403
// registration_disabled): an active user with the policy's default role and
// an unverified email and an unproven password (store.User.PasswordUnproven:
// no provider links to it automatically until a reset link sets it), to
// whom a verification link is emailed. An address
// that already has an account is 409. The user signs in afterwards with the
// password grant. A verification email that cannot be sent is logged, not
// fatal: the user can ask for another (ResendVerification).
func (s *Service) Register(ctx context.Context, m Meta, req RegisterRequest) (User, error) {
	if !s.cfg.PublicRegistration {
		return User{}, apierr.ErrRegistrationDisabled
	}
	email, err := normaliseEmail(req.Email)
	if err != nil {
		return User{}, err
	}
	if err := s.limit(ctx, LimitRegister, m, email); err != nil {
		return User{}, err
	}
	name, err := normaliseName(req.Name)
	if err != nil {
		return User{}, err
	}
	if req.Password == "" {
		return User{}, apierr.ErrInvalidRequest.WithDescription("password is required.")
	}
	if err := s.rules.Check(req.Password, email); err != nil {
		return User{}, weakPassword(err)
	}
	hash, err := s.hashPassword(ctx, req.Password)
	if err != nil {
		return User{}, err
	}
	// Nothing here proves the mailbox, and the verification link proves
	// only that its owner read it: the password stays unproven (never
	// linked automatically upstream) until a reset link sets it.
	u := store.User{Email: email, Name: name, PasswordHash: hash, Active: true, PasswordUnproven: true}
	if role, ok := s.policy.DefaultRole(); ok {
		u.Roles = []string{role}
	}
	if err := s.store.CreateUser(ctx, &u); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return User{}, errAccountExists
		}
		return User{}, storeErr("create user", err, nil)
	}
	s.record(ctx, "user.registered", store.OutcomeSuccess, u.ID, u.ID, m, map[string]string{"roles": strings.Join(u.Roles, " ")})
	if err := s.sendVerification(ctx, u); err != nil {
		s.log.Error("registration: verification email not sent", "user_id", u.ID, "err", err)
	}
	u.PasswordHash = ""
	return ViewUser(u), nil
}

// sendVerification issues a verification link for u and emails it; once
// it went out, older links stop working (linkSent).
func (s *Service) sendVerification(ctx context.Context, u store.User) error {
	secret, link, err := s.issueUserToken(ctx, u.ID, store.PurposeVerifyEmail, s.cfg.VerifyEmailTTL)
	if err != nil {
		return err
	}
	if err := s.sendVerify(ctx, u.Email, secret); err != nil {
		return err
	}
	s.linkSent(ctx, link)
	return nil
}

// ResendVerification emails the actor a new verification link (once it
// went out, older ones stop working; when it cannot be sent, 503 and they
// keep working). An already verified address is 409.
func (s *Service) ResendVerification(ctx context.Context, actor Actor) error {
	if err := s.limit(ctx, LimitVerifyEmail, actor.Meta, ""); err != nil {
		return err
	}
	u, err := s.loadSelf(ctx, actor)
	if err != nil {
		return err
	}
	if u.EmailVerified {
		return apierr.ErrConflict.WithDescription("Your email address is already verified.")
	}
	// Registration does not prove the address: whoever registered a
	// stranger's address could otherwise have it mailed without end.
	if err := s.limitMail(ctx, LimitVerifyEmail, u.Email); err != nil {
		return err
	}
	if err := s.sendVerification(ctx, u); err != nil {
		return apierr.ErrTemporarilyUnavailable.WithDescription("The verification email could not be sent. Try again later.").WithCause(err)
	}
	return nil
}

// VerifyEmail redeems a verification link once and marks the address
// verified. email_verified then shows in userinfo and id tokens.
func (s *Service) VerifyEmail(ctx context.Context, m Meta, tok string) (User, error) {
	if err := s.limit(ctx, LimitVerifyEmail, m, ""); err != nil {
		return User{}, err
	}
	const kind = "email verification"
	if !validSecret(tok) {
		return User{}, oneTimeTokenErr(kind, store.ErrNotFound)
	}
	u, err := s.store.ConsumeUserToken(ctx, store.PurposeVerifyEmail, hashSecret(tok), s.now(), func(u *store.User) error {
		u.EmailVerified = true
		return nil
	})
	if err != nil {
		return User{}, oneTimeTokenErr(kind, err)
	}
	s.record(ctx, "email.verified", store.OutcomeSuccess, u.ID, u.ID, m, nil)
	return ViewUser(u), nil
}
