package token

import (
	"context"
	"errors"
	"fmt"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
	"slices"
	"strings"
	"time"
)

// parseRefreshGrant reads refresh_token (RFC 6749 §6).
func parseRefreshGrant(params map[string]string, req TokenRequest) (TokenRequest, error) {
	req.RefreshToken = params["refresh_token"]
	if req.RefreshToken == "" {
		return req, apierr.ErrInvalidRequest.WithDescription("The refresh_token parameter is missing.")
	}
	return req, nil
}

func (s *Service) refreshGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	invalid := apierr.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked.")
	sid, ok := parseRefreshToken(req.RefreshToken)
	if !ok {
		return Response{}, invalid
	}
	now := s.now()
	if len(req.Scope) > 0 {
		if err := s.refusesScopeBeforeRotation(ctx, sid, client, req, now); err != nil {
			return Response{}, err
		}
	}
	next := newRefreshToken(sid)
	sealed, err := s.sealer.Seal([]byte(next), []byte("refresh:"+sid))
	if err != nil {
		return Response{}, apierr.ErrServer.WithCause(fmt.Errorf("seal successor: %w", err))
	}
	rotation := store.RotateRequest{
		FamilyID: sid, PresentedHash: HashSecret(req.RefreshToken), NextHash: HashSecret(next), NextSealed: sealed,
		Now: now, Grace: s.cfg.RefreshReuseGrace,
	}
	if req.RefreshFromCookie {
		// Every cookie client shares one cookie: the last app signed in to
		// put its token there, and another app's refresh presents it
		// without anyone's doing. That is no evidence of theft, so the
		// token state refuses another client's family (RotateInvalid:
		// invalid_grant) leaving it as it was, in the rotation's own round
		// trip. It compares ids: a family of a deleted client whose id was
		// given again is still ended below (IssuedTo), as is another
		// client's token sent in the body, which is theft evidence.
		rotation.ClientID = client.ID
	}
	res, err := s.state.RotateRefresh(ctx, rotation)
	if err != nil {
		if res.Outcome != store.RotateReuseDetected && res.Outcome != store.RotateLimitReached {
			return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("rotate refresh token: %w", err))
		}
		// Reuse, or the rotation limit, revoked the family; its access
		// tokens' revocation may be pending in the token state.
		if err := s.revocationFailed(err, "revoke the session of a refresh token: "+res.Outcome.String()); err != nil {
			return Response{}, err
		}
	}
	// The token state refuses (RotateInvalid) a family whose session or
	// user is revoked, even one the revocation did not mark, in the
	// rotation's own round trip where it can (store.TokenState.RotateRefresh),
	// so the recheck the code and MFA grants make is not needed here.
	fam := res.Family
	switch res.Outcome {
	case store.RotateOK:
	case store.RotateGraceReplay:
		plain, err := s.sealer.Open(res.SuccessorSealed, []byte("refresh:"+sid))
		if err != nil {
			return Response{}, invalid.WithCause(fmt.Errorf("open sealed successor: %w", err))
		}
		next = string(plain)
	case store.RotateReuseDetected:
		s.reuseDetected(ctx, sid, fam, client, meta)
		return Response{}, invalid
	case store.RotateLimitReached:
		s.rotationLimitReached(ctx, sid, fam, client, meta)
		return Response{}, invalid
	default:
		return Response{}, invalid
	}
	user, tn, refused, err := s.honours(ctx, fam, client, res.UserVersion, now, true)
	if err != nil {
		return Response{}, err
	}
	switch {
	case refused == nil:
	case refused.quiet:
		if rerr := s.state.RevokeFamily(ctx, sid, now); rerr != nil {
			s.log.Warn("revoke the family of a refused refresh", "reason", refused.end.reason, "err", rerr)
		}
		return Response{}, refused.answer
	default:
		if err := s.endRefused(ctx, fam, client, meta, now, refused.end); err != nil {
			return Response{}, err
		}
		return Response{}, refused.answer
	}
	g, err := s.refreshGrantSet(sid, fam, user, tn, client, req.Scope)
	if err != nil {
		return Response{}, err
	}
	return s.respond(g, next, now)
}

// refreshGrantSet is what a refresh of the session sid (fam, honoured by
// honours, which returned user and tn) through client grants when it asks
// for requested (empty: the session's scope). It is the one reading of a
// refresh's grant: the refresh answers it (respond, whose scope is
// grantSet.scope), and introspection (introspectRefresh) states its scope
// as the refresh token's. A scope the session may no longer have is
// invalid_scope (refreshScope).
func (s *Service) refreshGrantSet(sid string, fam store.RefreshFamily, user store.User, tn store.Tenant, client store.Client, requested []string) (grantSet, error) {
	scope, err := s.refreshScope(fam, user, client, requested)
	if err != nil {
		return grantSet{}, err
	}
	return grantSet{client: client, user: &user, permissions: scope.Permissions, oidc: scope.OIDC, roles: slices.Clone(user.Roles),
		sid: sid, authTime: fam.AuthTime, amr: fam.AMR, refreshExpiry: fam.AbsoluteExpiry, tenant: tn,
		scopeAsked: len(requested) > 0 || fam.RequestedScope != "" || fam.Scope != ""}, nil
}

// refreshScope is what a refresh of fam by user (with their roles in the
// session's tenant) through client grants when it asks for requested
// (empty: the session's scope). The session follows the user's current
// permissions (or keeps to the ones it named); a refresh may narrow the
// scope, never widen it: asking for more is invalid_scope.
func (s *Service) refreshScope(fam store.RefreshFamily, user store.User, client store.Client, requested []string) (policy.ScopeGrant, error) {
	scope, err := policy.NarrowOnRefresh(strings.Fields(fam.RequestedScope), requested, s.perms.Permissions(user.Roles), client.Scopes)
	if err != nil {
		return policy.ScopeGrant{}, scopeError(err)
	}
	if ThirdPartyApp(client) {
		// The login may have granted less than the user holds: a new role
		// of the user does not reach the session.
		if scope, err = policy.KeepToGranted(scope, requested, strings.Fields(fam.Scope)); err != nil {
			return policy.ScopeGrant{}, scopeError(err)
		}
	}
	return scope, nil
}

// refusesScopeBeforeRotation judges a refresh that asks for a scope before
// the rotation spends the presented token. Refused after it, the successor
// would never be handed out and the token the client still holds would be
// the replaced one: its retry with a corrected scope, which RFC 6749 §6
// allows (no new refresh token was issued), would count as reuse and end
// the session. So the family is read (it changes nothing) and the scope
// decided as the refresh will decide it; a refusal answers invalid_scope
// with the token left as it was. Anything else this read cannot settle (an
// unknown, replayed or revoked token, another client's, a user or tenant
// that no longer stands) is left to the rotation, which judges and ends
// sessions as it always does. Only refreshes that name a scope pay the
// extra read: most send none.
func (s *Service) refusesScopeBeforeRotation(ctx context.Context, sid string, client store.Client, req TokenRequest, now time.Time) error {
	fam, err := s.state.FindRefresh(ctx, sid, HashSecret(req.RefreshToken), now, s.cfg.RefreshReuseGrace)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrRefreshReused):
		return nil // the rotation refuses it, and ends the session of a reused token
	case err != nil:
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("read the refresh token's session: %w", err))
	}
	user, _, refused, err := s.honours(ctx, fam, client, store.UserVersion{}, now, false)
	switch {
	case err != nil:
		return err
	case refused != nil:
		return nil
	}
	_, err = s.refreshScope(fam, user, client, req.Scope)
	return err
}

// reuseDetected counts and audits the reuse of a refresh token of the
// session sid (fam) presented by client after it was rotated: at the token
// endpoint (RotateReuseDetected, the rotation having ended the session)
// or the revocation endpoint (Revoke, having ended it with RevokeFamily,
// as the rotation does). Wherever it is presented, the one alarm
// (token.refresh_reuse_detected, the reuse metric) is raised.
func (s *Service) reuseDetected(ctx context.Context, sid string, fam store.RefreshFamily, client store.Client, meta RequestMeta) {
	s.metrics.RefreshReuseDetected()
	s.audit.Record(ctx, store.AuditEvent{Action: "token.refresh_reuse_detected", Outcome: store.OutcomeFailure,
		TargetID: fam.UserID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
		Details: map[string]string{"sid": sid}})
}

// rotationLimitReached audits the end of the session sid (fam) at its
// rotation limit (RotateLimitReached: the family kept
// store.MaxFamilyRotations used hashes, and the rotation ended it as it
// ends a reused one): token.revoked, failed, with the reason
// rotation_limit, so that it is told apart from a theft alarm, and counted
// (portcullis_refresh_rotation_limit_total).
func (s *Service) rotationLimitReached(ctx context.Context, sid string, fam store.RefreshFamily, client store.Client, meta RequestMeta) {
	s.metrics.RefreshRotationLimitReached()
	s.audit.Record(ctx, store.AuditEvent{Action: "token.revoked", Outcome: store.OutcomeFailure,
		TargetID: fam.UserID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, TenantID: fam.TenantID,
		Details: map[string]string{"sid": sid, "reason": store.RotateLimitReached.String()}})
}

// refusal is why a refresh refuses a family the token state still
// honours (honours): the error the refresh answers, and how it ends the
// family: on purpose and recorded (endRefused), or, when quiet, revoked
// with only a warning should that fail (the user or tenant no longer
// stands: the refresh's answer does not wait on it).
type refusal struct {
	answer error
	end    familyEnd
	quiet  bool
}

// honours is the one judgement of whether a refresh through client honours
// fam at now, the token state having found the family live (its token
// current, its session and user not revoked): refresh grants act on it,
// and introspection (introspectRefresh) calls a refresh token active
// exactly when it finds nothing to refuse. A refusal is returned, never
// acted on: the refresh ends the family (endRefused) and answers
// refusal.answer; introspection answers active false. The user returned
// holds the roles of the session's tenant. err is only a check that could
// not be made (503), or a tenant error other than a refusal. It refuses:
//   - a client the family was not issued to (IssuedTo): the token is
//     compromised;
//   - a family of the code flow without offline_access whose browser
//     session has ended (browserSessionLive; keep: the check counts as the
//     session's activity, as a refresh does, which introspection must not);
//   - a user gone, deactivated or who must change their password;
//   - a session in a tenant the user can no longer be in (sessionTenant);
//   - a role gained since the login that needs a second factor the login
//     did not use (secondFactorOwed: amr is kept unchanged on refresh).
//
// userVersion is the user's version when the token state read it (the
// rotation); zero reads it.
func (s *Service) honours(ctx context.Context, fam store.RefreshFamily, client store.Client, userVersion store.UserVersion, now time.Time, keep bool) (store.User, store.Tenant, *refusal, error) {
	invalid := apierr.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked.")
	if !IssuedTo(client, fam.ClientID, fam.CreatedAt) {
		// A token presented by a client it was not issued to is compromised.
		return store.User{}, store.Tenant{}, &refusal{answer: invalid, end: familyEnd{outcome: store.OutcomeFailure,
			reason: "refresh token presented by another client"}}, nil
	}
	live, err := s.browserSessionLive(ctx, fam, now, keep)
	if err != nil {
		return store.User{}, store.Tenant{}, nil, err
	}
	if !live {
		return store.User{}, store.Tenant{}, &refusal{
			answer: apierr.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked: the browser session it was issued in has ended. Sign in again."),
			end:    familyEnd{outcome: store.OutcomeSuccess, tenantID: fam.TenantID, reason: "browser session ended"}}, nil
	}
	user, err := s.users.GetUserAt(ctx, fam.UserID, userVersion)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.User{}, store.Tenant{}, nil, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
	}
	if err != nil || !user.Active || user.MustChangePassword {
		return store.User{}, store.Tenant{}, &refusal{answer: invalid, end: familyEnd{outcome: store.OutcomeSuccess,
			tenantID: fam.TenantID, reason: "the account is gone, deactivated or must change its password"}, quiet: true}, nil
	}
	// The session stays in the tenant its login named, whatever the
	// request says, with the roles the user holds there now: a removed
	// member (or a deactivated tenant) gets nothing.
	user, tn, err := s.sessionTenant(ctx, client, user, fam.TenantID)
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == apierr.ErrInvalidGrant.Code {
			return store.User{}, store.Tenant{}, &refusal{answer: invalid.WithCause(err), end: familyEnd{outcome: store.OutcomeSuccess,
				tenantID: fam.TenantID, reason: "the organisation session is refused"}, quiet: true}, nil
		}
		return store.User{}, store.Tenant{}, nil, err
	}
	// amr is kept unchanged on refresh, so a role gained since the login
	// that needs a second factor the login did not use cannot be carried
	// by it: the refresh is refused and the person signs in again with the
	// second factor. The rotation has already replaced the presented token
	// with a successor that is never handed out; left alone, the presented
	// token would next count as reuse (a false theft alarm that ends the
	// session anyway), so the refresh ends the family on purpose. Checking
	// before the rotation would cost every refresh another round trip to
	// the token state for this rare case.
	if err := s.secondFactorOwed(user.Roles, fam.AMR); err != nil {
		return store.User{}, store.Tenant{}, &refusal{answer: err, end: familyEnd{outcome: store.OutcomeFailure, tenantID: tn.ID,
			reason: "a role of the account requires a second factor the login did not use"}}, nil
	}
	return user, tn, nil, nil
}

// browserSessionLive applies the contract's "refresh tokens of a grant
// that did not include offline_access end with the browser session" to
// fam: a family bound to a browser session (startSession) is honoured only
// while a live browser session continues it (not ended, idle or past its
// absolute expiry), as logout would have ended it (signout.Ender). With
// keep (a refresh), finding the session live counts as its activity: like
// Keycloak's SSO session, an application in use keeps the person signed
// in, so its refresh tokens do not die after PORTCULLIS_SESSION_IDLE_TTL
// without a visit to the login page. The store writes that at most a few
// times per idle period (store.TouchDivisor) and never past the session's
// absolute expiry. Without keep (introspection) the session is only read.
// Password-grant and offline_access families are bound to none and pay
// nothing.
func (s *Service) browserSessionLive(ctx context.Context, fam store.RefreshFamily, now time.Time, keep bool) (bool, error) {
	if fam.BrowserSessionID == "" {
		return true, nil
	}
	err := store.ErrNotFound
	switch {
	case s.browser == nil:
	case keep:
		err = s.browser.KeepBrowserSession(ctx, fam.UserID, fam.BrowserSessionID, now)
	default:
		err = s.browser.BrowserSessionLive(ctx, fam.UserID, fam.BrowserSessionID, now)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("check the browser session: %w", err))
}

// familyEnd is why a refresh ends its family on purpose (endRefused): the
// audit event's outcome, tenant and reason.
type familyEnd struct {
	outcome  store.Outcome
	tenantID string
	reason   string
}

// endRefused ends fam (its refresh tokens and access tokens) for a refresh
// that refuses it, and records token.revoked with why. The rotation has
// already replaced the presented token by a successor never handed out:
// ended on purpose, the presented token answers invalid_grant as an ended
// session's, never as a reuse. A revocation that could not be recorded is
// the error to answer.
func (s *Service) endRefused(ctx context.Context, fam store.RefreshFamily, client store.Client, meta RequestMeta, now time.Time, why familyEnd) error {
	if err := s.revocationFailed(s.state.RevokeFamily(ctx, fam.ID, now), "end a refreshed session: "+why.reason); err != nil {
		return err
	}
	s.audit.Record(ctx, store.AuditEvent{Action: "token.revoked", Outcome: why.outcome, TargetID: fam.UserID,
		ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, TenantID: why.tenantID,
		Details: map[string]string{"sid": fam.ID, "reason": why.reason}})
	return nil
}
