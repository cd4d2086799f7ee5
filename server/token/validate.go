package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/store"
)

// maxTokenLen bounds tokens accepted anywhere; Portcullis never issues larger ones.
const maxTokenLen = 8 << 10

// clockLeeway tolerates small clock differences on nbf and iat.
const clockLeeway = 30 * time.Second

var errTokenInvalid = errors.New("token invalid")

// verifyAccessToken checks signature (a published, non-revoked key whose
// algorithm the header names), typ at+jwt, issuer and lifetime. It does not
// consult the revocation state.
func (s *Service) verifyAccessToken(raw string, now time.Time) (AccessClaims, error) {
	if raw == "" || len(raw) > maxTokenLen || strings.Count(raw, ".") != 2 {
		return AccessClaims{}, errTokenInvalid
	}
	payload, _, err := s.signer.VerifyTyped(raw, TypeAccessToken)
	if err != nil {
		return AccessClaims{}, fmt.Errorf("%w: %w", errTokenInvalid, err)
	}
	var c AccessClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return AccessClaims{}, fmt.Errorf("%w: claims: %v", errTokenInvalid, err)
	}
	switch {
	case c.Issuer != s.cfg.Issuer:
		return AccessClaims{}, fmt.Errorf("%w: issuer", errTokenInvalid)
	case c.Subject == "" || c.JTI == "" || c.ClientID == "":
		return AccessClaims{}, fmt.Errorf("%w: missing claims", errTokenInvalid)
	case now.Unix() >= c.Expiry:
		return AccessClaims{}, fmt.Errorf("%w: expired", errTokenInvalid)
	case c.NotBefore != 0 && now.Add(clockLeeway).Unix() < c.NotBefore:
		return AccessClaims{}, fmt.Errorf("%w: not yet valid", errTokenInvalid)
	}
	return c, nil
}

// keysUnusable is the answer to a token that could not be checked, or
// signed, because this instance's signing keys cannot be used now (not
// loaded, or not reloaded for so long that they may miss a revocation made
// elsewhere: keys.ErrStale): 503, never a judgement of the token. nil for
// any other error.
func keysUnusable(err error) error {
	if errors.Is(err, keys.ErrStale) || errors.Is(err, keys.ErrNotReady) {
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return nil
}

func (s *Service) revoked(ctx context.Context, c AccessClaims) (bool, error) {
	issued, ok := jtiTime(c.JTI)
	if !ok {
		issued = time.Unix(c.IssuedAt, 0)
	}
	ref := store.AccessTokenRef{JTI: c.JTI, SID: c.SID, IssuedAt: issued}
	if c.IsUser() {
		ref.UserID, ref.ClientID = c.Subject, c.ClientID
	}
	r, err := s.state.IsAccessTokenRevoked(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("check revocation: %w", err)
	}
	return r, nil
}

// AuthenticateBearer validates an access token presented to one of
// Portcullis's own endpoints, including revocation. Failures are RFC 6750
// invalid_token errors; an unreachable token state is 503 (fail closed).
func (s *Service) AuthenticateBearer(ctx context.Context, raw string) (AccessClaims, error) {
	return s.authenticateBearer(ctx, raw, false)
}

// AuthenticateAdmin is AuthenticateBearer for Portcullis's own admin API
// (/admin/*): the token must also name the issuer among its audiences. A
// token minted for a downstream API (aud "api", say) is refused with 401
// invalid_token whoever it belongs to, so a token leaked by that API, its
// logs or its traffic cannot administer Portcullis (contract, "Portcullis's
// own audience"). Only a client whose audiences list the issuer (the
// built-in first-party client does) gives a token that audience.
func (s *Service) AuthenticateAdmin(ctx context.Context, raw string) (AccessClaims, error) {
	return s.authenticateBearer(ctx, raw, true)
}

func (s *Service) authenticateBearer(ctx context.Context, raw string, admin bool) (AccessClaims, error) {
	c, err := s.verifyAccessToken(raw, s.now())
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return AccessClaims{}, unusable
		}
		return AccessClaims{}, apierr.ErrInvalidToken.WithCause(err)
	}
	if c.Tenant != "" && s.tenancy == nil {
		// Issued while organisations were on: with them off nothing
		// would confine it to its tenant, so it is refused (fail closed).
		return AccessClaims{}, apierr.ErrInvalidToken.WithDescription("This token belongs to an organisation, and organisations are off.")
	}
	if admin && !c.Audience.Contains(s.cfg.Issuer) {
		return AccessClaims{}, apierr.ErrInvalidToken.WithDescription("This token is not meant for Portcullis's admin API: its audience does not include %s.", s.cfg.Issuer)
	}
	if err := s.RecheckBearer(ctx, c); err != nil {
		return AccessClaims{}, err
	}
	return c, nil
}

// RecheckBearer is the revocation half of AuthenticateBearer, for c, the
// claims of a token AuthenticateBearer accepted earlier in the request. A
// caller that wrote, with that token, something that outlives the token's
// session (an API key, a second factor) calls it after the write: a
// revocation the request raced (its body held back while the sessions were
// ended) is seen here, or else it was written after this read and whatever
// the revocation's path undoes next finds the write (accounts,
// madeWithLiveToken). A revoked
// token is 401 invalid_token; an unreachable token state is 503.
func (s *Service) RecheckBearer(ctx context.Context, c AccessClaims) error {
	revoked, err := s.revoked(ctx, c)
	if err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	if revoked {
		return apierr.ErrInvalidToken.WithDescription("The access token has been revoked.")
	}
	return nil
}

// RecheckLogin is RecheckBearer for a login that has no access token yet:
// the password step of userID at authTime, which an mfa_token stands for.
// A cut-off of the user's sessions written since (a password reset, an
// MFA reset, a deactivation) ended that login, as it would have revoked a
// token issued at authTime: 401 invalid_token; an unreachable token state
// is 503. The MFA grants read the same revocation when they issue
// (voidAfterIssue).
func (s *Service) RecheckLogin(ctx context.Context, userID string, authTime time.Time) error {
	revoked, err := s.state.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: newJTI(authTime), UserID: userID, IssuedAt: authTime})
	if err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("check revocation: %w", err))
	}
	if revoked {
		return apierr.ErrInvalidToken.WithDescription("The account's sessions were ended after this sign-in began. Sign in again.")
	}
	return nil
}

// Introspect answers RFC 7662 for an authenticated confidential client.
// Anything not active is {"active": false} and nothing else.
func (s *Service) Introspect(ctx context.Context, cred ClientCredentials, raw string) (map[string]any, error) {
	client, err := s.AuthenticateClient(ctx, cred)
	if err != nil {
		return nil, err
	}
	if err := RequireConfidential(client); err != nil {
		return nil, err
	}
	inactive := map[string]any{"active": false}
	if strings.HasPrefix(raw, RefreshTokenPrefix) {
		return s.introspectRefresh(ctx, client, raw)
	}
	if apikey.HasPrefix(raw) {
		if s.apiKeys == nil {
			return inactive, nil
		}
		return s.apiKeys.IntrospectAPIKey(ctx, client, raw)
	}
	c, err := s.verifyAccessToken(raw, s.now())
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return nil, unusable
		}
		return inactive, nil
	}
	revoked, err := s.revoked(ctx, c)
	if err != nil {
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	if revoked {
		return inactive, nil
	}
	out := map[string]any{
		"active":     true,
		"token_type": "Bearer",
		"iss":        c.Issuer,
		"sub":        c.Subject,
		"aud":        c.Audience,
		"exp":        c.Expiry,
		"iat":        c.IssuedAt,
		"nbf":        c.NotBefore,
		"jti":        c.JTI,
		"client_id":  c.ClientID,
		"scope":      c.Scope,
		"roles":      c.Roles,
	}
	if c.SID != "" {
		out["sid"] = c.SID
	}
	if c.Tenant != "" {
		if s.tenancy == nil {
			return inactive, nil
		}
		out["tenant"] = c.Tenant
	}
	if len(c.AMR) > 0 {
		out["amr"], out["acr"] = c.AMR, c.ACR
	}
	return out, nil
}

// SetAPIKeys installs what answers API keys at introspection and revocation.
// Call it while wiring, before the service serves requests.
func (s *Service) SetAPIKeys(k APIKeys) { s.apiKeys = k }

// RevokeAPIKey is the revocation endpoint for an API key presented by value
// (contract, "API keys and machine users"): whoever holds a key may kill
// it, so no client authentication is asked. handled is false when raw is
// not shaped like a key (the caller then goes on with Revoke); a malformed,
// unknown or revoked key is handled and not an error (RFC 7009 §2.2).
func (s *Service) RevokeAPIKey(ctx context.Context, raw string, meta RequestMeta) (handled bool, err error) {
	if !apikey.HasPrefix(raw) {
		return false, nil
	}
	if s.apiKeys == nil {
		return true, nil
	}
	return true, s.apiKeys.RevokeAPIKeyByValue(ctx, raw, meta)
}

// Revoke implements RFC 7009: revoking a refresh token ends its session
// (family and access tokens); revoking an access token denies its jti until
// it expires. Unknown, malformed or already revoked tokens are not errors.
// A refresh token counts as its session's while a refresh would honour it:
// the current one, and the one it replaced inside
// PORTCULLIS_REFRESH_REUSE_GRACE (store.TokenState.FindRefresh), so a
// revocation answered 200 leaves no token of the session working. An
// already rotated one (outside that window) presented by its client is
// reuse, as at the token endpoint (RFC 9700 §4.14.2): the session ends
// all the same and the reuse alarm is raised (reuseDetected), so an app
// signing out with the token a thief has already refreshed ends the
// thief's session too. Another client's token, current or rotated, is
// 400 unauthorized_client and ends nothing.
func (s *Service) Revoke(ctx context.Context, cred ClientCredentials, raw string, meta RequestMeta) error {
	client, err := s.AuthenticateClient(ctx, cred)
	if err != nil {
		return err
	}
	now := s.now()
	// token_type_hint is not needed: a token's own shape (the refresh-token
	// prefix, or a JWS) says what it is, so a wrong hint cannot mislead the
	// search (RFC 7009 §2.1 asks the server to look beyond the hint).
	if sid, ok := parseRefreshToken(raw); ok {
		fam, err := s.state.FindRefresh(ctx, sid, HashSecret(raw), now, s.cfg.RefreshReuseGrace)
		reused := errors.Is(err, store.ErrRefreshReused)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil && !reused:
			return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("find refresh token: %w", err))
		}
		if fam.ClientID != client.ID {
			return apierr.ErrUnauthorizedClient.WithDescription("The token was not issued to this client.")
		}
		// A reused token ends the session as the rotation's reuse
		// detection ends it (RevokeFamily is the store's same routine).
		what := "revoke refresh token"
		if reused {
			what = "revoke the session of a reused refresh token"
		}
		if err := s.revocationFailed(s.state.RevokeFamily(ctx, sid, now), what); err != nil {
			return err
		}
		if reused {
			s.reuseDetected(ctx, sid, fam, client, meta)
			return nil
		}
		s.audit.Record(ctx, store.AuditEvent{Action: "token.revoked", Outcome: store.OutcomeSuccess, ActorID: fam.UserID,
			TargetID: fam.UserID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
			Details: map[string]string{"sid": sid, "token_type": "refresh_token"}})
		return nil
	}
	c, err := s.verifyAccessToken(raw, now)
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return unusable // not judged: it may be a live token
		}
		return nil // unknown, malformed or expired: nothing to revoke
	}
	if c.ClientID != client.ID {
		return apierr.ErrUnauthorizedClient.WithDescription("The token was not issued to this client.")
	}
	if err := s.revocationFailed(s.state.RevokeAccessToken(ctx, c.JTI, time.Unix(c.Expiry, 0)), "revoke access token"); err != nil {
		return err
	}
	s.audit.Record(ctx, store.AuditEvent{Action: "token.revoked", Outcome: store.OutcomeSuccess, ActorID: c.Subject,
		TargetID: c.Subject, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
		Details: map[string]string{"jti": c.JTI, "token_type": "access_token"}})
	return nil
}

// introspectRefresh is RFC 7662 for a refresh token: active, with its
// session's data, while a refresh would honour it, otherwise only active
// false. The token state finds it as Revoke does (FindRefresh: inside the
// reuse grace the token just replaced is as active as its successor, and
// answers the same), and the refresh's own judgement (honours) refuses
// nothing, nor its scope (refreshGrantSet). Its scope is what a refresh
// with it grants now: the session's OIDC scopes and the permissions the
// user holds now (or those of them the session named). An already rotated token is inactive and ends nothing:
// introspection is a read, asked by a resource server, not the token's
// client, so reuse is judged only where the token is used or revoked.
// exp is when the token stops refreshing unless it is used first
// (store.RefreshFamily.Expiry: its idle expiry, or the session's absolute
// one when that is earlier), which a resource server may cache until
// (RFC 7662 §2.2).
func (s *Service) introspectRefresh(ctx context.Context, client store.Client, raw string) (map[string]any, error) {
	inactive := map[string]any{"active": false}
	sid, ok := parseRefreshToken(raw)
	if !ok {
		return inactive, nil
	}
	now := s.now()
	fam, err := s.state.FindRefresh(ctx, sid, HashSecret(raw), now, s.cfg.RefreshReuseGrace)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrRefreshReused):
		return inactive, nil
	case err != nil:
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("find refresh token: %w", err))
	}
	// Active only while a refresh by its client would honour it: the
	// client still exists, and the refresh's own judgement (honours)
	// refuses nothing, reading the browser session without keeping it
	// alive.
	owner, err := s.LookupClient(ctx, fam.ClientID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return inactive, nil
	case err != nil:
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	user, tn, refused, err := s.honours(ctx, fam, owner, store.UserVersion{}, now, false)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return inactive, nil
	}
	// Its scope is what a refresh with it grants now (refreshGrantSet, as
	// the refresh answers it). Its only error is invalid_scope, the
	// session's scope being one no refresh grants now: a refusal, so the
	// token is not active.
	g, err := s.refreshGrantSet(sid, fam, user, tn, owner, nil)
	if err != nil {
		return inactive, nil
	}
	return map[string]any{
		"active":     true,
		"token_type": "refresh_token",
		"iss":        s.cfg.Issuer,
		"sub":        fam.UserID,
		"client_id":  fam.ClientID,
		"scope":      g.scope(),
		"sid":        fam.ID,
		"iat":        fam.CreatedAt.Unix(),
		"exp":        fam.Expiry().Unix(),
	}, nil
}

// Logout ends the session of the presented access token: its refresh family
// and every access token issued in it, and the token itself. A token
// exchanged from an API key ends alone: its sid (apikey.SessionID) is the
// key's, shared by every token exchanged from it, now and later, and a
// session's revocation has no time to compare, so revoking it would leave
// every later exchange from the live key dead on arrival; only the key's
// revocation (apikeys.Service) ends that sid.
func (s *Service) Logout(ctx context.Context, c AccessClaims, meta RequestMeta) error {
	now := s.now()
	if _, fromKey := apikey.KeyIDOfSession(c.SID); c.SID != "" && !fromKey {
		if err := s.revocationFailed(s.state.RevokeFamily(ctx, c.SID, now), "logout"); err != nil {
			return err
		}
	}
	if err := s.revocationFailed(s.state.RevokeAccessToken(ctx, c.JTI, time.Unix(c.Expiry, 0)), "logout"); err != nil {
		return err
	}
	s.audit.Record(ctx, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: c.Subject,
		TargetID: c.Subject, ClientID: c.ClientID, IP: meta.IP, UserAgent: meta.UserAgent,
		Details: map[string]string{"sid": c.SID, "reason": "logout"}})
	return nil
}

// revocationFailed is the one reading of a revocation's error: nil when it
// succeeded, and nil too when it is recorded durably and only waits for the
// token state to take it (store.ErrRevocationPending: this instance refuses
// every token until it has written it and retries in the background, and
// Redis is rebuilt from the durable record should it lose data), so the
// caller's change stands and is reported as done; otherwise 503.
func (s *Service) revocationFailed(err error, what string, attrs ...any) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrRevocationPending):
		s.log.Warn(what+": revocation recorded durably, applied to the token state once it answers again",
			append(attrs, "err", err)...)
		return nil
	default:
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("%s: %w", what, err))
	}
}

// EndClientGrants ends every grant of a user at one client up to now (the
// user withdrew their consent to it), on every instance: the user's
// sessions at the client end (their refresh tokens stop working), every
// access token the client holds for the user is revoked, with or without
// a session, and so is a code issued to it before now and redeemed later
// (voidAfterIssue). The user's sessions at other clients go on, and so do
// the client's tokens issued after now (a consent given again). Like
// EndUserSessions it returns only once the clock has left the cut-off's
// millisecond.
func (s *Service) EndClientGrants(ctx context.Context, userID, clientID string) error {
	cutoff := s.now()
	if err := s.revocationFailed(s.state.RevokeClientGrants(ctx, userID, clientID, cutoff), "end the grants of a client", "client_id", clientID); err != nil {
		return err
	}
	s.leaveMillisecond(cutoff)
	return nil
}

// leaveMillisecond returns once the clock has left cutoff's millisecond
// (a cut-off includes its own), so that a token issued after a revocation
// returns is never born revoked.
func (s *Service) leaveMillisecond(cutoff time.Time) {
	for i := 0; i < 50 && s.now().UnixMilli() <= cutoff.UnixMilli(); i++ {
		time.Sleep(100 * time.Microsecond)
	}
}

// EndUserSessions ends every session of a user and revokes every access token
// issued to them up to now (password change or reset, deactivation, role
// removal, deletion, admin revoke). A login that began before the cut-off
// and finishes after it gets no session (the token state refuses its
// family) and its access token, whose jti carries the login's start, is
// revoked by the cut-off. The cut-off includes its own
// millisecond, so it returns only once the clock has left that millisecond:
// a token issued right after it returns is never born revoked. It sends no
// back-channel logout: the accounts service reaches it through
// signout.Ender.EndUser, which queues that first.
func (s *Service) EndUserSessions(ctx context.Context, userID string) error {
	cutoff := s.now()
	if err := s.revocationFailed(s.state.RevokeUserSessions(ctx, userID, cutoff), "end sessions", "user_id", userID); err != nil {
		return err
	}
	s.leaveMillisecond(cutoff)
	return nil
}

// IssueForUser starts a fresh session for a user who just proved who they are
// (invite acceptance, password change) through client, as a password grant
// would, and returns the token response. tenant is the slug of the
// organisation the session continues in ("": none named), and the
// organisation rule of every login applies (loginTenant): a client of an
// organisation issues only in it, and nothing while it is inactive or
// organisations are off. Like a password grant it is refused
// (invalid_grant) when the user's roles there require a second factor:
// the caller asks for the factor first (mfa.Service.Begin).
func (s *Service) IssueForUser(ctx context.Context, client store.Client, user store.User, tenant string, scope []string) (Response, error) {
	resp, _, err := s.issueSession(ctx, client, user, tenant, scope, s.now())
	if err == nil {
		s.metrics.TokenIssued("session")
	}
	return resp, err
}

// issueSession grants a user who just proved who they are by password the
// scope they may have through client in the organisation tenant names
// (loginTenant): a session (refresh family) when the client may refresh,
// an access token, and an id token when openid was asked for. A user who
// must change their password gets a token with no permissions and no
// roles, and no refresh token.
func (s *Service) issueSession(ctx context.Context, client store.Client, user store.User, tenant string, scope []string, now time.Time) (Response, grantSet, error) {
	user, tn, err := s.loginTenant(ctx, client, user, tenant)
	if err != nil {
		return Response{}, grantSet{}, err
	}
	return s.issueLogin(ctx, client, user, scope, now, loginInfo{authTime: now, amr: passwordAMR(), tenant: tn})
}

// passwordAMR is the amr of a login by password alone (RFC 8176).
func passwordAMR() []string { return []string{mfa.AMRPassword} }

// loginInfo is what the login behind an issuance fixed: its time, and for
// the code flow the pre-assigned sid, nonce, amr and whether a client that
// named no permission gets none (ThirdPartyApp).
type loginInfo struct {
	authTime       time.Time
	sid            string
	nonce          string
	amr            []string
	onlyPermsNamed bool
	// tenant is the organisation the login named (zero: none); the user
	// given to issueLogin already holds that tenant's roles.
	tenant store.Tenant
	// recheck, when set, is a revocation the grant reads once its session
	// exists (see Service.voidAfterIssue): startSession reads it with
	// the family's creation, in one round trip where the store can.
	recheck *store.AccessTokenRef
	// browserSession and browserSessionExpiry are the browser session the
	// grant ends with (AuthCode.BrowserBinding; "": none).
	browserSession       string
	browserSessionExpiry time.Time
}

// issueLogin is issueSession for a login described by li.
func (s *Service) issueLogin(ctx context.Context, client store.Client, user store.User, scope []string, now time.Time, li loginInfo) (Response, grantSet, error) {
	g := grantSet{client: client, user: &user, authTime: li.authTime, roles: []string{}, sid: li.sid, nonce: li.nonce, amr: li.amr,
		tenant: li.tenant, recheck: li.recheck, browserSession: li.browserSession, browserSessionExpiry: li.browserSessionExpiry,
		scopeAsked: len(scope) > 0}
	if !user.MustChangePassword {
		g.roles = append([]string{}, user.Roles...)
	}
	// Before anything is created: a login that did not use the second
	// factor the roles it would carry need gets nothing.
	if err := s.secondFactorOwed(g.roles, li.amr); err != nil {
		return Response{}, g, err
	}
	grant, err := s.loginScope(client, user, scope, li.onlyPermsNamed)
	if err != nil {
		return Response{}, g, err
	}
	g.permissions, g.oidc = grant.Permissions, grant.OIDC
	var rt string
	if !user.MustChangePassword && clientAllowsGrant(client, GrantRefreshToken) {
		if rt, err = s.startSession(ctx, &g, scope, now); err != nil {
			return Response{}, g, err
		}
	}
	resp, err := s.respond(g, rt, now)
	if err != nil {
		return Response{}, g, err
	}
	resp.MustChangePassword = user.MustChangePassword
	return resp, g, nil
}

// loginScope resolves what a login of user through client grants for the
// requested scope (invalid_scope when it asks what it may not have): no
// permission for a user who must change their password, none for a
// third-party client of the code flow that named none (onlyPermsNamed).
func (s *Service) loginScope(client store.Client, user store.User, scope []string, onlyPermsNamed bool) (policy.ScopeGrant, error) {
	if user.MustChangePassword {
		grant, err := policy.ResolveRestrictedScope(scope)
		if err != nil {
			return grant, scopeError(err)
		}
		return grant, nil
	}
	grant, err := policy.ResolveScope(scope, s.perms.Permissions(user.Roles), client.Scopes)
	if err != nil {
		return grant, scopeError(err)
	}
	if onlyPermsNamed && !namesPermission(scope) {
		grant.Permissions = []string{}
	}
	return grant, nil
}

// ThirdPartyApp reports whether client is a third-party application: not
// first-party, and signing people in where they grant it only what it names
// (the code flow's consent, or token exchange by a client the person never
// types a password into). Its logins get no permission they do not name
// (onlyPermsNamed), its sessions keep on refresh to what their login
// granted (a refresh never widens a grant, RFC 6749 §6), and its tokens
// never act on the account itself (self-service). A client with the
// password grant and no code flow is a front-end the person types their
// password into: its sessions follow the user, whichever grant began them,
// token exchange included. A family does not record which grant began it,
// so a third-party client with the code flow and the password grant keeps
// its password sessions to their login's grant too: narrower, never wider.
func ThirdPartyApp(client store.Client) bool {
	if client.FirstParty {
		return false
	}
	return clientAllowsGrant(client, GrantAuthorizationCode) ||
		clientAllowsGrant(client, GrantTokenExchange) && !clientAllowsGrant(client, GrantPassword)
}

// namesPermission reports whether scope names a permission (anything but an OIDC scope).
func namesPermission(scope []string) bool {
	return slices.ContainsFunc(scope, func(s string) bool { return !policy.IsOIDCScope(s) })
}

// UserInfo answers OIDC UserInfo for a verified user access token: sub,
// email, email_verified and roles (and name when set). roles are the
// token's own roles claim that the user still holds and the token's scope
// still covers: a token exchanged from an API key, which carries none,
// shows none.
func (s *Service) UserInfo(ctx context.Context, c AccessClaims) (map[string]any, error) {
	u, err := s.users.GetUser(ctx, c.Subject)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apierr.ErrInvalidToken.WithDescription("The user no longer exists.")
		}
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	if !u.Active {
		return nil, apierr.ErrInvalidToken.WithDescription("The user is deactivated.")
	}
	if s.tenancy != nil {
		// The roles of the token's tenant (or the platform roles), as
		// in the token itself.
		var err error
		if u, _, err = s.tenancy.ForLogin(ctx, u, c.Tenant); err != nil {
			if errors.Is(err, tenancy.ErrRefused) {
				return nil, apierr.ErrInvalidToken.WithDescription("The account is no longer a member of the token's organisation.")
			}
			return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
		}
	}
	// The roles of the token itself that the user still holds and its
	// scope covers: a narrowed token, or a key's token (roles []), does
	// not learn here the roles it was not given, and a role removed since
	// is gone.
	roles := []string{}
	if !u.MustChangePassword {
		for _, r := range s.perms.CoveredRoles(u.Roles, c.Scopes()) {
			if slices.Contains(c.Roles, r) {
				roles = append(roles, r)
			}
		}
	}
	out := map[string]any{"sub": u.ID, "email": u.Email, "email_verified": u.EmailVerified, "roles": roles}
	if u.Name != "" {
		out["name"] = u.Name
	}
	return out, nil
}

// VerifyIDTokenHint checks an id_token_hint (OIDC §3.1.2.1): signed by one of
// the published, non-revoked keys, typ JWT, issued by this issuer. An
// expired hint is fine (it only names the user). It returns the subject.
// While the keys cannot be used (keysUnusable) the error is a 503
// *apierr.Error: the hint is not judged.
func (s *Service) VerifyIDTokenHint(raw string) (string, error) {
	c, err := s.ParseIDTokenHint(raw)
	return c.Subject, err
}

// ParseIDTokenHint is VerifyIDTokenHint returning the hint's claims (RP-Initiated
// Logout 1.0 §2 compares its aud with client_id and its sid with the
// browser session's grants).
func (s *Service) ParseIDTokenHint(raw string) (IDClaims, error) {
	if raw == "" || len(raw) > maxTokenLen || strings.Count(raw, ".") != 2 {
		return IDClaims{}, errTokenInvalid
	}
	payload, _, err := s.signer.VerifyTyped(raw, TypeIDToken)
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return IDClaims{}, unusable // not judged: it may be a valid hint
		}
		return IDClaims{}, fmt.Errorf("%w: %v", errTokenInvalid, err)
	}
	var c IDClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return IDClaims{}, fmt.Errorf("%w: claims: %v", errTokenInvalid, err)
	}
	if c.Issuer != s.cfg.Issuer || c.Subject == "" {
		return IDClaims{}, fmt.Errorf("%w: issuer or subject", errTokenInvalid)
	}
	return c, nil
}

// EndGrants ends the sessions (refresh families, and every access token
// carrying their sid) of the given grants, on every instance: the grants of
// an ended browser session. Unknown sids are not an error: a code not yet
// redeemed is voided too (its redemption revokes what it issues).
func (s *Service) EndGrants(ctx context.Context, sids []string) error {
	now := s.now()
	var failed []error
	for _, sid := range sids {
		// Every grant is tried: one that fails does not keep the others alive.
		if err := s.revocationFailed(s.state.RevokeFamily(ctx, sid, now), "end a grant of a browser session", "sid", sid); err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return apierr.ErrTemporarilyUnavailable.WithCause(errors.Join(failed...))
	}
	return nil
}
