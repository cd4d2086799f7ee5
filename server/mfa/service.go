package mfa

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// Counter counts attempts in a fixed window (store.TokenState).
type Counter interface {
	Hit(ctx context.Context, key string, window time.Duration, now time.Time) (count int64, resetIn time.Duration, err error)
	Peek(ctx context.Context, key string, now time.Time) (count int64, resetIn time.Duration, err error)
}

// Sealer seals secrets under the key-encryption key (keys.KEKRing).
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// Policy says whose roles require a second factor (*policy.Policy).
type Policy interface {
	MFARequired(roles []string) bool
}

// Throttle is the login throttle (*ratelimit.Limiter), as server/passcheck
// uses it: CheckLogin reserves an attempt (counted as a failure) or refuses
// it with a 429 or 503 *apierr.Error; LoginSucceeded takes back the
// attempts a successful sign-in reserved, each from the window it was
// counted in (never anyone else's failures).
type Throttle interface {
	CheckLogin(ctx context.Context, ip, login string) (ratelimit.Counted, error)
	LoginSucceeded(ctx context.Context, ip string, attempts ...ratelimit.Counted)
}

// RefusalBudget bounds the audit events of failures anyone can cause
// without credentials that one client address may write
// (*ratelimit.Limiter implements it).
type RefusalBudget interface {
	AllowRefusalAudit(ctx context.Context, ip string) bool
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Deps are the collaborators and settings of a Service. Throttle and Audit
// may be nil (no login throttle; nothing recorded); the rest are required
// except Issuer, TokenTTL and Now, which default to "Portcullis", 5 minutes
// and time.Now.
type Deps struct {
	Factors  store.MFAFactors
	Once     store.SingleUse
	Counter  Counter
	KEKs     Sealer
	Policy   Policy
	Throttle Throttle
	Audit    Auditor
	// Budget bounds the failures recorded before the login throttle
	// counted anything (failed); nil records every one.
	Budget RefusalBudget
	// Issuer labels TOTP enrolments (PORTCULLIS_MFA_ISSUER).
	Issuer string
	// TokenTTL is the lifetime of an mfa_token (PORTCULLIS_MFA_TOKEN_TTL).
	TokenTTL time.Duration
	Now      func() time.Time
}

// Service is multi-factor authentication. It is safe for concurrent use,
// and every check it makes holds across instances sharing the stores.
type Service struct {
	d Deps
}

// New returns a Service.
func New(d Deps) (*Service, error) {
	if d.Factors == nil || d.Once == nil || d.Counter == nil || d.KEKs == nil || d.Policy == nil {
		return nil, errors.New("mfa: Factors, Once, Counter, KEKs and Policy are required")
	}
	if d.Issuer == "" {
		d.Issuer = "Portcullis"
	}
	if d.TokenTTL <= 0 {
		d.TokenTTL = 5 * time.Minute
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Service{d: d}, nil
}

// Required reports whether the policy requires a second factor of a user
// holding roles (mfa.required_for_level).
func (s *Service) Required(roles []string) bool { return s.d.Policy.MFARequired(roles) }

// Status returns the second factors the user has, the credentials listed.
func (s *Service) Status(ctx context.Context, userID string) (Status, error) {
	sum, err := s.Summary(ctx, userID)
	if err != nil {
		return Status{}, err
	}
	creds, err := s.d.Factors.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		return Status{}, unavailable("list webauthn credentials", err)
	}
	// The list is what the views show: its count, read after, wins.
	sum.WebAuthnCredentials = len(creds)
	return Status{Summary: sum, WebAuthn: creds}, nil
}

// Summary counts the second factors the user has, in one read: what a
// login's second step (Begin) and the checks that only ask "enrolled?"
// need.
func (s *Service) Summary(ctx context.Context, userID string) (Summary, error) {
	sum, err := s.d.Factors.MFASummary(ctx, userID)
	if err != nil {
		return Summary{}, unavailable("summarise second factors", err)
	}
	return Summary(sum), nil
}

// Begin follows a login's first factor (a correct password, or a sign-in
// at an upstream identity provider). It returns (nil, nil) when the user
// has no second factor and the policy requires none; otherwise a Challenge
// with a fresh mfa_token (single use, TokenTTL, bound to the user, client
// and scope) and the methods it allows, or EnrollmentRequired (and no
// methods) when the policy requires a factor the user does not have.
// first is the first factor's amr (["pwd"] for a password; an upstream
// sign-in's upstream.AMR, "fed" first), kept with the token: the amr of the
// completed login is built from it (loginAMR), whoever completes the step
// (the login page or an MFA grant). authTime is when the first factor was
// given (the login's auth_time).
// counted is the attempt the login throttle counted the password step as
// (passcheck.Result.Counted: the login as typed, and the failure window),
// so that the second step's failures and its success count under the same
// key, and the success takes back the password step's attempt with its
// own, from the window it was counted in; a zero Counted means the
// account's email, with no attempt of a password step to take back. tenant is the organisation the password step named
// ("" for none): the second step finishes that login, in that tenant.
// factors is the user's summary when the caller read it with the user
// (passcheck.Result.Factors: the login's one read, made before the
// password was verified); nil reads it here.
func (s *Service) Begin(ctx context.Context, u store.User, factors *Summary, counted ratelimit.Counted, clientID, scope, tenant string,
	authTime time.Time, first []string) (*Challenge, error) {
	if len(first) == 0 {
		return nil, errors.New("mfa: Begin needs the first factor's amr")
	}
	var st Summary
	if factors != nil {
		st = *factors
	} else {
		var err error
		if st, err = s.Summary(ctx, u.ID); err != nil {
			return nil, err
		}
	}
	enrolled := st.Enrolled()
	if !enrolled && !s.Required(u.Roles) {
		return nil, nil
	}
	login, passwordCounted := counted.Login, counted.Login != ""
	if login == "" {
		login = u.Email
	}
	rec := tokenRecord{User: u.ID, Login: login, PasswordCounted: passwordCounted, PasswordWindow: counted.Window, Client: clientID, Scope: scope, Tenant: tenant, AuthTime: authTime.UTC(),
		First: append([]string(nil), first...), EnrollmentRequired: !enrolled, ExpiresAt: s.d.Now().Add(s.d.TokenTTL).UTC()}
	if enrolled {
		rec.Methods = st.Methods()
	}
	token, err := s.issueToken(ctx, rec)
	if err != nil {
		return nil, err
	}
	return &Challenge{Token: token, EnrollmentRequired: rec.EnrollmentRequired, Methods: rec.Methods, ExpiresAt: rec.ExpiresAt}, nil
}

// Reasons of mfa.failed.
const (
	reasonBadCode         = "bad_code"
	reasonInvalidToken    = "invalid_token"
	reasonTooManyAttempts = "too_many_attempts"
)

// Complete is one attempt at the second step: the token is read (bound to
// clientID when not ""), the attempt counted (at most 5 per token, counted
// atomically; a 6th is ErrInvalidToken and the token is dead), reserved
// under the account's login throttle, the factor verified and used up,
// then the token taken (of concurrent correct attempts exactly one
// completes; a lost race is ErrInvalidToken). Every refusal is audited
// mfa.failed. Errors wrap ErrInvalidToken or ErrBadCode, or are 429/503
// *apierr.Error from the throttle or a store.
func (s *Service) Complete(ctx context.Context, token, clientID string, f Factor, m Meta) (Completed, error) {
	return s.CompleteForTenant(ctx, token, clientID, "", f, m)
}

// CompleteForTenant is Complete for a second step that names an
// organisation (the MFA grants' tenant parameter): the token is bound to
// the one its password step named, so naming another is ErrInvalidToken
// before any attempt is counted or factor used. "" names none: the
// token's own applies (Completed.Tenant).
func (s *Service) CompleteForTenant(ctx context.Context, token, clientID, tenant string, f Factor, m Meta) (Completed, error) {
	rec, hash, err := s.peekToken(ctx, token, clientID)
	if err == nil && tenant != "" && tenant != rec.Tenant {
		err = fmt.Errorf("%w: the password step named another tenant", ErrInvalidToken)
	}
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			s.failed(ctx, m, rec.User, reasonInvalidToken, f.Method(), "")
		}
		return Completed{}, err
	}
	if rec.EnrollmentRequired {
		s.failed(ctx, m, rec.User, reasonInvalidToken, f.Method(), "")
		return Completed{}, fmt.Errorf("%w: the token allows enrolment only", ErrInvalidToken)
	}
	n, _, err := s.d.Counter.Hit(ctx, attemptsKey(hash), s.d.TokenTTL, s.d.Now())
	if err != nil {
		return Completed{}, unavailable("count mfa_token attempt", err)
	}
	if n > maxAttempts {
		s.failed(ctx, m, rec.User, reasonTooManyAttempts, f.Method(), "")
		return Completed{}, fmt.Errorf("%w: out of attempts", ErrInvalidToken)
	}
	var step ratelimit.Counted
	if s.d.Throttle != nil {
		if step, err = s.d.Throttle.CheckLogin(ctx, m.IP, rec.Login); err != nil {
			return Completed{}, err
		}
	}
	amr, err := f.Verify(ctx, rec.User)
	if err != nil {
		if errors.Is(err, ErrBadCode) {
			s.failed(ctx, m, rec.User, reasonBadCode, f.Method(), "")
		}
		return Completed{}, fmt.Errorf("mfa %s: %w", f.Method(), err)
	}
	switch _, err := s.d.Once.TakeOnce(ctx, store.OnceMFAToken, hash, s.d.Now()); {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		s.failed(ctx, m, rec.User, reasonInvalidToken, f.Method(), "")
		return Completed{}, fmt.Errorf("%w: used meanwhile", ErrInvalidToken)
	case err != nil:
		return Completed{}, unavailable("take mfa_token", err)
	}
	if s.d.Throttle != nil {
		// This step's attempt, and the password step's it was left, each
		// from the window it was counted in (a record without the
		// password step's window: this step's only).
		attempts := []ratelimit.Counted{step}
		if rec.PasswordCounted && rec.PasswordWindow != 0 {
			attempts = []ratelimit.Counted{{Login: rec.Login, Window: rec.PasswordWindow}, step}
		}
		s.d.Throttle.LoginSucceeded(ctx, m.IP, attempts...)
	}
	done := Completed{Pending: rec.pending(), AMR: loginAMR(rec.first(), amr), RecoveryCodesLeft: -1}
	if rf, ok := f.(*recoveryFactor); ok {
		done.RecoveryCodesLeft = rf.left
		s.record(ctx, m, "mfa.recovery_code_used", rec.User, map[string]string{"left": fmt.Sprint(rf.left)})
	}
	return done, nil
}

// loginAMR is the one place the amr of a login completed with its second
// factor is built (RFC 8176): the first factor's methods (first: "pwd", or
// an upstream sign-in's "fed"…), the second factor's methods, "mfa" last,
// each once. A second factor never proves a password: its "pwd" is
// dropped.
func loginAMR(first, factor []string) []string {
	var amr []string
	for _, a := range first {
		if a != AMRMFA && !contains(amr, a) {
			amr = append(amr, a)
		}
	}
	for _, a := range factor {
		if a != AMRPassword && a != AMRMFA && !contains(amr, a) {
			amr = append(amr, a)
		}
	}
	return append(amr, AMRMFA)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Reset removes every factor and recovery code of the user (an
// administrator's MFA reset), audited mfa.reset. The caller ends the
// user's sessions.
func (s *Service) Reset(ctx context.Context, userID string, m Meta) error {
	if err := s.d.Factors.DeleteAllFactors(ctx, userID); err != nil {
		return unavailable("reset mfa", err)
	}
	s.record(ctx, m, "mfa.reset", userID, nil)
	return nil
}

// record audits a success about target.
func (s *Service) record(ctx context.Context, m Meta, action, target string, details map[string]string) {
	if s.d.Audit == nil {
		return
	}
	s.d.Audit.Record(ctx, store.AuditEvent{Action: action, Outcome: store.OutcomeSuccess, ActorID: m.ActorID,
		TargetID: target, ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: m.WithVia(details)})
}

// failed audits a refused second factor (mfa.failed) about target, the
// user the mfa_token or enrolment named; never the code. A refusal whose
// mfa_token matched no record (peekToken found none: unknown, malformed,
// expired and gone, used) names no user (target ""): anyone can send such
// a token, as often as they like, with a public client's id, so it is
// recorded only within the client address's budget (Deps.Budget) and
// dropped beyond it. Every refusal that names a user (a wrong code, which
// the login throttle counts first; a real token of another client or
// organisation, out of attempts, used meanwhile or for enrolment only)
// needed a real credential and is always recorded, so that made-up tokens
// cannot bury it.
func (s *Service) failed(ctx context.Context, m Meta, target, reason, method, stage string) {
	if s.d.Audit == nil {
		return
	}
	if matched := target != ""; !matched && s.d.Budget != nil && !s.d.Budget.AllowRefusalAudit(ctx, m.IP) {
		return
	}
	details := map[string]string{"reason": reason, "method": method}
	if stage != "" {
		details["stage"] = stage
	}
	s.d.Audit.Record(ctx, store.AuditEvent{Action: "mfa.failed", Outcome: store.OutcomeFailure, ActorID: m.ActorID,
		TargetID: target, ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: details})
}
