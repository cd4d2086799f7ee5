package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// parsePasswordGrant reads username and password (RFC 6749 §4.3.2).
func parsePasswordGrant(params map[string]string, req TokenRequest) (TokenRequest, error) {
	req.Username, req.Password = params["username"], params["password"]
	if req.Username == "" || req.Password == "" {
		return req, apierr.ErrInvalidRequest.WithDescription("The password grant needs username and password.")
	}
	return req, nil
}

func (s *Service) passwordGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	if s.checker == nil {
		return Response{}, apierr.ErrServer.WithCause(errors.New("password grant: no password checker"))
	}
	now := s.now() // the login starts before the password (hash) is read
	// The throttle's failures are cleared only once no second factor
	// follows: the second step's failures count there too.
	res, err := s.checker.Check(ctx, passcheck.Attempt{Login: req.Username, Password: req.Password,
		IP: meta.IP, UserAgent: meta.UserAgent, ClientID: client.ID, FailureAction: "login.failed", DeferSuccess: true})
	if errors.Is(err, passcheck.ErrBadCredentials) {
		return Response{}, apierr.ErrInvalidGrant.WithDescription("The username or password is incorrect.")
	}
	if err != nil {
		return Response{}, err
	}
	s.Rehash(ctx, res, req.Password)
	user, tn, err := s.loginTenant(ctx, client, res.User, req.Tenant)
	if err != nil {
		s.audit.Record(ctx, store.AuditEvent{Action: "login.failed", Outcome: store.OutcomeFailure, ActorID: res.User.ID,
			TargetID: res.User.ID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
			Details: map[string]string{"grant": GrantPassword, "reason": "tenant"}})
		return Response{}, err
	}
	if err := s.secondStep(ctx, client, user, (*mfa.Summary)(res.Factors), res.Counted(), req.Scope, req.Tenant, now); err != nil {
		return Response{}, err
	}
	s.checker.Succeeded(ctx, res)
	return s.finishLogin(ctx, client, user, req.Scope, now, loginInfo{authTime: now, amr: passwordAMR(), tenant: tn}, meta, GrantPassword, "")
}

// secondStep asks for the second factor after a correct password: nil when
// the user needs none, else mfa_required with the challenge (and no token).
// factors are the user's second factors as the password step read them
// with the user; counted is the password step's throttle attempt (its key,
// which the second step counts under too, and its window); tenant the organisation the password step
// named, which the mfa_token binds.
// A scope the login could not be granted is refused first, so that no
// second factor is spent on it.
func (s *Service) secondStep(ctx context.Context, client store.Client, user store.User, factors *mfa.Summary, counted ratelimit.Counted, scope []string, tenant string, now time.Time) error {
	if s.mfa == nil {
		return nil
	}
	if _, err := s.loginScope(client, user, scope, false); err != nil {
		return err
	}
	ch, err := s.mfa.Begin(ctx, user, factors, counted, client.ID, strings.Join(scope, " "), tenant, now, passwordAMR())
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return err
		}
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("begin the second factor: %w", err))
	}
	if ch == nil {
		return nil
	}
	desc := "A second factor is required to finish signing in: send the mfa_token with a code to the token endpoint."
	if ch.EnrollmentRequired {
		desc = "A second factor must be enrolled before signing in: enrol one with the mfa_token, then sign in again."
	}
	return apierr.ErrMFARequired.WithDescription("%s", desc).WithMFA(apierr.MFAChallenge{
		Token: ch.Token, EnrollmentRequired: ch.EnrollmentRequired, Methods: ch.Methods})
}

// finishLogin is where every login of the token endpoint that proved the
// user (the password grant, the MFA grants) gets its session: the tokens
// issued (amr and auth_time from li) and, for a login that began before
// (li.recheck), voided when a cut-off covers it (voidAfterIssue), then the
// login recorded (the user's
// last-login time and login.succeeded with the grant and the second
// factor's method, one write).
func (s *Service) finishLogin(ctx context.Context, client store.Client, user store.User, scope []string, now time.Time,
	li loginInfo, meta RequestMeta, grant, method string) (Response, error) {
	resp, g, err := s.issueLogin(ctx, client, user, scope, now, li)
	if err != nil {
		return Response{}, err
	}
	if err := s.voidAfterIssue(ctx, g, now); err != nil {
		return Response{}, err
	}
	details := map[string]string{"sid": g.sid, "grant": grant}
	if method != "" {
		details["method"] = method
	}
	s.audit.RecordLogin(ctx, store.AuditEvent{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: user.ID,
		TargetID: user.ID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, Details: details, TenantID: li.tenant.ID,
		Time: now})
	return resp, nil
}

// errHashChanged stops a rehash whose account's password hash is no longer
// the one the login verified.
var errHashChanged = errors.New("the password hash changed since the login verified it")

// Rehash upgrades an outdated password hash after a successful password
// check (res, with the password it verified) when res.NeedsRehash: the one
// upgrade of every login that checks a password (the password grant, the
// login page, the link of an identity provider). It writes only over the
// hash res verified: a password change, reset or temporary password
// committed while the login was verifying stays, and the upgrade is
// dropped (the next login with the new password upgrades that one).
// Failures are logged, never the login's.
func (s *Service) Rehash(ctx context.Context, res passcheck.Result, password string) {
	if !res.NeedsRehash || s.passwords == nil {
		return
	}
	userID, verified := res.User.ID, res.User.PasswordHash
	h, err := s.passwords.Hash(ctx, password)
	if err != nil {
		s.log.Warn("rehash password", "user_id", userID, "err", err)
		return
	}
	_, err = s.users.UpdateUser(ctx, userID, func(u *store.User) error {
		if u.PasswordHash != verified {
			return errHashChanged
		}
		u.PasswordHash = h
		return nil
	})
	switch {
	case errors.Is(err, errHashChanged):
		s.log.Info("rehash dropped: the password changed meanwhile", "user_id", userID)
	case err != nil:
		s.log.Warn("store rehashed password", "user_id", userID, "err", err)
	}
}
