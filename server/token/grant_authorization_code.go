package token

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/store"
)

// CodeStore takes authorization codes once (store.SingleUse; the codes are
// put there by the authorization endpoint).
type CodeStore interface {
	// TakeOnce atomically marks the record taken and returns its value:
	// ErrNotFound when unknown or expired untaken, the value with
	// ErrTokenUsed when taken before, also past the code's expiry while its
	// tombstone lasts (store.TakenKeptFor), so a late replay still revokes.
	TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
}

// parseAuthorizationCodeGrant reads code, redirect_uri and code_verifier
// (RFC 6749 §4.1.3, RFC 7636 §4.5). Their meaning is checked at exchange.
func parseAuthorizationCodeGrant(params map[string]string, req TokenRequest) (TokenRequest, error) {
	req.Code, req.RedirectURI, req.CodeVerifier = params["code"], params["redirect_uri"], params["code_verifier"]
	if req.Code == "" {
		return req, apierr.ErrInvalidRequest.WithDescription("The code parameter is missing.")
	}
	return req, nil
}

// maxCodeLen bounds a presented code; Portcullis's codes are far shorter.
const maxCodeLen = 256

// authorizationCodeGrant redeems an authorization code (RFC 6749 §4.1.3).
// The code is consumed first and checked after, so each code gets exactly
// one attempt (no guessing the PKCE verifier). Every failure is
// invalid_grant; a code presented a second time also revokes everything the
// first redemption issued (its sid: refresh family and access tokens).
func (s *Service) authorizationCodeGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	invalid := apierr.ErrInvalidGrant.WithDescription("The authorization code is invalid, expired or already used.")
	if s.codes == nil {
		// No code store, so no code was ever issued here: the code is unknown.
		s.log.Warn("authorization_code grant used but the token service has no code store")
		return Response{}, invalid
	}
	if len(req.Code) > maxCodeLen {
		return Response{}, invalid
	}
	now := s.now()
	raw, err := s.codes.TakeOnce(ctx, store.OnceAuthCode, HashSecret(req.Code), now)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		return Response{}, invalid
	case errors.Is(err, store.ErrTokenUsed):
		return Response{}, s.codeReused(ctx, raw, client, meta, now, invalid)
	default:
		return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("take authorization code: %w", err))
	}
	code, err := ParseAuthCode(raw)
	if err != nil {
		return Response{}, invalid.WithCause(err)
	}
	if err := checkCodeRedemption(code, client, req); err != nil {
		return Response{}, err
	}
	user, err := s.codeUser(ctx, code)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Response{}, invalid.WithDescription("The account that signed in no longer exists.")
		}
		return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
	}
	if !user.Active {
		return Response{}, invalid.WithDescription("The account that signed in is deactivated.")
	}
	user, tn, err := s.loginTenant(ctx, client, user, code.Tenant)
	if err != nil {
		return Response{}, err
	}
	lineage, sessionExpiry := code.BrowserBinding()
	resp, g, err := s.issueLogin(ctx, client, user, code.Scopes, now, loginInfo{
		browserSession: lineage, browserSessionExpiry: sessionExpiry,
		authTime: code.AuthTime, sid: code.SID, nonce: code.Nonce, amr: code.AMR, onlyPermsNamed: ThirdPartyApp(client),
		tenant: tn, recheck: &store.AccessTokenRef{JTI: newJTI(code.AuthTime), SID: code.SID, UserID: user.ID, IssuedAt: code.AuthTime,
			ClientID: client.ID, GrantedAt: code.IssuedAt},
	})
	if err != nil {
		return Response{}, err
	}
	// A replay of the code that ran while this redemption was issuing
	// revoked its sid, perhaps before the family existed: the family is
	// revoked again so it is dead too, and the response still goes out
	// (exactly one redemption answers 200); its tokens are revoked. A
	// cut-off of the user after the login voids the grant; it is also what
	// stops a code whose account snapshot went stale in a way that matters
	// (CodeUser). So does the user's cut-off at the client after the code
	// was issued (the consent it came from was withdrawn).
	if err := s.voidAfterIssue(ctx, g, now); err != nil {
		return Response{}, err
	}
	return resp, nil
}

// errEndedWhileSigningIn refuses a login every session of whose user was
// ended after it began (a password reset, a deactivation), or whose
// grant to its client was ended after it was given (the consent
// withdrawn). Its cause is store.ErrSessionsEnded, as the token state's
// own refusal of such a login's family.
var errEndedWhileSigningIn = apierr.ErrInvalidGrant.WithDescription(
	"The account's sessions, or its grant to this client, were ended while signing in. Sign in again.").
	WithCause(store.ErrSessionsEnded)

// voidAfterIssue is the last step of every login issued after it began
// (the code and MFA grants, which set loginInfo.recheck): once its tokens
// exist it reads the recheck and, when a revocation covers the login (its
// sid, the user's cut-off at the login's start, or the user's cut-off at
// the client at the grant's time: a code issued before its consent was
// withdrawn), revokes the family the tokens belong to. Checking after issuing is what leaves no gap: a
// revocation written before the check is seen, and one written after it
// is later than the tokens' issue time, so it covers them. A client
// without refresh tokens has no family for the token state's own cut-off
// check to refuse, so this is the only check there. The user's cut-off,
// or the user's at the client, refuses the grant (errEndedWhileSigningIn);
// a revoked sid alone (a
// replayed code) lets the response go out, its tokens revoked. A grant
// without a recheck (the password grant issues at the login's start) has
// nothing to do.
func (s *Service) voidAfterIssue(ctx context.Context, g grantSet, now time.Time) error {
	if g.recheck == nil {
		return nil
	}
	revoked, err := s.revokedAfterIssue(ctx, g)
	if err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("check the grant: %w", err))
	}
	if !revoked {
		return nil
	}
	if g.sid != "" {
		if err := s.revocationFailed(s.state.RevokeFamily(ctx, g.sid, now), "revoke the grant of a voided login"); err != nil {
			return err
		}
	}
	if g.recheck.SID == "" {
		return errEndedWhileSigningIn // the recheck read the user's cut-offs alone
	}
	cut, err := s.state.IsAccessTokenRevoked(ctx, store.AccessTokenRef{JTI: g.recheck.JTI, UserID: g.recheck.UserID, IssuedAt: g.recheck.IssuedAt,
		ClientID: g.recheck.ClientID, GrantedAt: g.recheck.GrantedAt})
	if err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("check the grant: %w", err))
	}
	if cut {
		return errEndedWhileSigningIn
	}
	return nil
}

// revokedAfterIssue reads g's recheck (loginInfo.recheck), unless
// startSession read it already with the family's creation.
func (s *Service) revokedAfterIssue(ctx context.Context, g grantSet) (bool, error) {
	if g.rechecked {
		return g.recheckRevoked, nil
	}
	return s.state.IsAccessTokenRevoked(ctx, *g.recheck)
}

// codeUser is the account a code's tokens are issued from: the snapshot the
// authorization request took (see CodeUser; the cut-off check after issuing
// is what keeps it safe), or the account as stored now for a code issued
// without one.
func (s *Service) codeUser(ctx context.Context, code AuthCode) (store.User, error) {
	if code.User != nil {
		return code.User.StoreUser(code.UserID), nil
	}
	return s.users.GetUser(ctx, code.UserID)
}

// checkCodeRedemption applies RFC 6749 §4.1.3 and RFC 7636 §4.6 to a taken
// code: issued to this client, the same redirect_uri as at /authorize, and
// a code_verifier matching the stored challenge (none without one).
func checkCodeRedemption(code AuthCode, client store.Client, req TokenRequest) error {
	invalid := apierr.ErrInvalidGrant
	if !IssuedTo(client, code.ClientID, code.IssuedAt) {
		return invalid.WithDescription("The authorization code was issued to another client.")
	}
	switch {
	case code.RedirectURI != "":
		if req.RedirectURI != code.RedirectURI {
			return invalid.WithDescription("redirect_uri must be identical to the one sent in the authorization request.")
		}
	case req.RedirectURI != "":
		if _, err := redirecturi.Match(client.RedirectURIs, req.RedirectURI); err != nil {
			return invalid.WithDescription("redirect_uri is not a registered redirect URI of this client.")
		}
	}
	switch {
	case code.CodeChallenge == "" && req.CodeVerifier != "":
		return invalid.WithDescription("A code_verifier was sent but the authorization request had no code_challenge.")
	case code.CodeChallenge == "":
		return nil
	case req.CodeVerifier == "":
		return invalid.WithDescription("The code_verifier is missing.")
	case !ValidCodeVerifier(req.CodeVerifier):
		return invalid.WithDescription("The code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~.")
	case !verifierMatches(req.CodeVerifier, code.CodeChallenge):
		return invalid.WithDescription("The code_verifier does not match the code_challenge.")
	}
	return nil
}

// codeReused answers a second redemption: it revokes what the code issued
// (the refresh family and access tokens of its sid) on every instance and
// records token.code_reuse_detected.
func (s *Service) codeReused(ctx context.Context, raw []byte, client store.Client, meta RequestMeta, now time.Time, invalid *apierr.Error) error {
	code, err := ParseAuthCode(raw)
	if err != nil {
		return invalid.WithCause(err)
	}
	if err := s.revocationFailed(s.state.RevokeFamily(ctx, code.SID, now), "revoke the grant of a reused authorization code"); err != nil {
		return err
	}
	s.audit.Record(ctx, store.AuditEvent{Action: "token.code_reuse_detected", Outcome: store.OutcomeFailure,
		TargetID: code.UserID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
		Details: map[string]string{"sid": code.SID, "code_client_id": code.ClientID}})
	return invalid.WithDescription("The authorization code was already used; the tokens issued for it are revoked.")
}
