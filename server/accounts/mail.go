package accounts

import (
	"context"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/store"
)

// mailTimeout bounds one email's delivery (every SMTP attempt and retry)
// when the caller waits for it.
const mailTimeout = 30 * time.Second

// send delivers msg within mailTimeout; the error never holds the message.
func (s *Service) send(ctx context.Context, msg mail.Message, err error) error {
	if err != nil {
		return fmt.Errorf("render email: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, mailTimeout)
	defer cancel()
	if err := s.mail.Send(ctx, msg); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	return nil
}

// sendInvite emails the invite link {PUBLIC_URL}/invite?token=…, naming
// the organisation tenant it is to (zero: the whole instance) and, when
// the address has an account (existing), saying that accepting adds that
// account to it.
func (s *Service) sendInvite(ctx context.Context, tenant store.Tenant, existing bool, to, token, role string) error {
	msg, err := s.tmpl.Invite(mail.InviteData{ProductName: s.cfg.ProductName, To: to, Role: role,
		Link: mail.Link(s.cfg.PublicURL, mail.InvitePath, token), ExpiresIn: s.cfg.InviteTTL,
		Organisation: tenant.Name, ExistingAccount: existing && tenant.ID != ""})
	return s.send(ctx, msg, err)
}

// sendReset emails the reset link {PUBLIC_URL}/reset-password?token=….
func (s *Service) sendReset(ctx context.Context, to, token string) error {
	msg, err := s.tmpl.PasswordReset(mail.ResetData{ProductName: s.cfg.ProductName, To: to,
		Link: mail.Link(s.cfg.PublicURL, mail.ResetPasswordPath, token), ExpiresIn: s.cfg.ResetTTL})
	return s.send(ctx, msg, err)
}

// sendVerify emails the verification link {PUBLIC_URL}/verify-email?token=….
func (s *Service) sendVerify(ctx context.Context, to, token string) error {
	msg, err := s.tmpl.VerifyEmail(mail.VerifyData{ProductName: s.cfg.ProductName, To: to,
		Link: mail.Link(s.cfg.PublicURL, mail.VerifyEmailPath, token), ExpiresIn: s.cfg.VerifyEmailTTL})
	return s.send(ctx, msg, err)
}

// issueUserToken stores a new one-time token of purpose for the user and
// returns its secret and the stored token. It supersedes nothing: once its
// email went out the caller calls linkSent, so a link whose email cannot be
// sent leaves the one sent before working.
func (s *Service) issueUserToken(ctx context.Context, userID string, purpose store.UserTokenPurpose, ttl time.Duration) (string, store.UserToken, error) {
	secret, err := newSecret()
	if err != nil {
		return "", store.UserToken{}, err
	}
	t := store.UserToken{UserID: userID, Purpose: purpose, TokenHash: hashSecret(secret), ExpiresAt: s.now().Add(ttl)}
	if err := s.store.CreateUserToken(ctx, &t); err != nil {
		return "", store.UserToken{}, fmt.Errorf("store %s token: %w", purpose, err)
	}
	return secret, t, nil
}

// linkSent stops the user's older links of t's purpose once t's email went
// out (SupersedeUserTokens), so only the newest link works. Every path that
// emails a user's link calls it after the send, and only then. A failure
// is logged, not returned: the email went out and its link works; the
// older links, sent to the same address, keep working until they expire.
func (s *Service) linkSent(ctx context.Context, t store.UserToken) {
	if err := s.store.SupersedeUserTokens(ctx, t); err != nil {
		s.log.Error("a new link was emailed, but the older ones could not be stopped; they work until they expire",
			"user_id", t.UserID, "purpose", string(t.Purpose), "err", err)
	}
}
