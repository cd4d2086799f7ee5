package token

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// Response is the RFC 6749 §5.1 token response.
type Response struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// Scope is the granted scope, nil when it is not sent. RFC 6749 §5.1
	// requires it whenever it differs from the requested one, so a request
	// that asked for some scope and was granted none is answered "", never
	// silence (which a client reads as "all you asked for"); respond sets it.
	Scope              *string `json:"scope,omitempty"`
	IDToken            string  `json:"id_token,omitempty"`
	MustChangePassword bool    `json:"must_change_password,omitempty"`
	// RecoveryCodesLeft is how many recovery codes the user has left, on
	// the answer to the mfa-recovery-code grant only.
	RecoveryCodesLeft *int `json:"recovery_codes_left,omitempty"`
	// IssuedTokenType is set on a token-exchange answer (RFC 8693 §2.2.1).
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	// RefreshLifetime is what remains of the refresh family's absolute
	// lifetime when RefreshToken is set (the cookie's Max-Age); never sent.
	RefreshLifetime time.Duration `json:"-"`
	// ClientID is the client the tokens were issued to, whose delivery
	// rule (store.Client.RefreshByCookie) the answer follows; never sent.
	ClientID string `json:"-"`
}

// grantSet is what one issuance grants.
type grantSet struct {
	client      store.Client
	user        *store.User // nil for client_credentials
	permissions []string
	oidc        []string
	roles       []string
	sid         string
	authTime    time.Time
	// nonce goes into the id token of the code flow, only on the response
	// to the code, never on a refresh (OIDC §12.2). amr is how the user
	// signed in (a user's tokens carry it and its acr; refreshes keep it).
	nonce string
	amr   []string
	// refreshExpiry is the family's absolute expiry (startSession, or the
	// rotated family's), for Response.RefreshLifetime.
	refreshExpiry time.Time
	// ttl, when set, is the access token's lifetime instead of the
	// client's (a bound issuance, at most the client's).
	ttl time.Duration
	// tenant is the organisation the tokens act in (zero: none); its
	// slug is their `tenant` claim and its id binds the refresh family.
	tenant store.Tenant
	// recheck is loginInfo.recheck. When startSession read it with the
	// family's creation, rechecked is set and recheckRevoked is its answer.
	recheck                   *store.AccessTokenRef
	rechecked, recheckRevoked bool
	// browserSession is the lineage of the browser session the family
	// ends with ("": none) and browserSessionExpiry that session's
	// absolute expiry, which caps the family's (loginInfo).
	browserSession       string
	browserSessionExpiry time.Time
	// scopeAsked is whether the request asked for some scope (a refresh
	// without one asks for its family's, RFC 6749 §6): an empty grant is
	// then answered scope "" (Response.Scope).
	scopeAsked bool
}

func (g grantSet) scope() string {
	return strings.Join(append(slices.Clone(g.permissions), g.oidc...), " ")
}

// issueAccessToken signs an RFC 9068 access token.
func (s *Service) issueAccessToken(g grantSet, now time.Time) (string, int64, error) {
	ttl := s.accessTTL(g.client)
	if g.ttl > 0 {
		ttl = int64(g.ttl / time.Second)
	}
	sub := g.client.ID
	if g.user != nil {
		sub = g.user.ID
	}
	roles := g.roles
	if roles == nil {
		roles = []string{}
	}
	claims := AccessClaims{
		Issuer:    s.cfg.Issuer,
		Subject:   sub,
		Audience:  Audience(s.audiences(g.client)),
		Expiry:    now.Unix() + ttl,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		JTI:       newJTI(now),
		ClientID:  g.client.ID,
		Scope:     strings.Join(g.permissions, " "),
		Roles:     roles,
		SID:       g.sid,
		Tenant:    g.tenant.Slug,
	}
	if len(g.oidc) > 0 {
		claims.Scope = g.scope()
	}
	if !g.authTime.IsZero() {
		claims.AuthTime = g.authTime.Unix()
	}
	if g.user != nil && len(g.amr) > 0 {
		claims.AMR, claims.ACR = g.amr, mfa.ACR(g.amr)
	}
	tok, err := s.signer.Sign(claims, TypeAccessToken)
	if err != nil {
		return "", 0, fmt.Errorf("sign access token: %w", err)
	}
	return tok, ttl, nil
}

// issueIDToken signs an OIDC id token for the client (aud = client id),
// with the at_hash of accessToken (OIDC §3.1.3.6).
func (s *Service) issueIDToken(g grantSet, accessToken string, now time.Time) (string, error) {
	ttl := s.cfg.IDTokenTTL
	if ttl <= 0 {
		ttl = s.cfg.AccessTokenTTL
	}
	c := IDClaims{
		Issuer:       s.cfg.Issuer,
		Subject:      g.user.ID,
		Audience:     Audience{g.client.ID},
		Expiry:       now.Add(ttl).Unix(),
		IssuedAt:     now.Unix(),
		AuthorizedBy: g.client.ID,
		SID:          g.sid,
		Nonce:        g.nonce,
		AMR:          g.amr,
		Tenant:       g.tenant.Slug,
	}
	if !g.authTime.IsZero() {
		c.AuthTime = g.authTime.Unix()
	}
	if len(g.amr) > 0 {
		c.ACR = mfa.ACR(g.amr)
	}
	if slices.Contains(g.oidc, "email") {
		v := g.user.EmailVerified
		c.Email, c.EmailVerified = g.user.Email, &v
	}
	if slices.Contains(g.oidc, "profile") {
		c.Name = g.user.Name
		c.Roles = g.roles
	}
	// at_hash depends on the algorithm of the key that signs the id token:
	// hash for the access token's algorithm, and sign again in the rare case
	// a key rotation between the two signatures changed the algorithm.
	alg := jwsAlg(accessToken)
	for range 3 {
		c.AtHash = AtHash(alg, accessToken)
		tok, err := s.signer.Sign(c, TypeIDToken)
		if err != nil {
			return "", fmt.Errorf("sign id token: %w", err)
		}
		got := jwsAlg(tok)
		if got == alg {
			return tok, nil
		}
		alg = got
	}
	return "", errors.New("sign id token: the signing algorithm keeps changing")
}

// respond builds the token response for g, with refreshToken when not empty.
// Every issuance ends here, so this is where the roles claim (of the access
// token and the id token) is cut down to the roles the granted permissions
// cover (contract, "Roles follow the grant").
func (s *Service) respond(g grantSet, refreshToken string, now time.Time) (Response, error) {
	g.roles = s.perms.CoveredRoles(g.roles, g.permissions)
	at, ttl, err := s.issueAccessToken(g, now)
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return Response{}, unusable
		}
		return Response{}, apierr.ErrServer.WithCause(err)
	}
	resp := Response{AccessToken: at, TokenType: "Bearer", ExpiresIn: ttl, RefreshToken: refreshToken, ClientID: g.client.ID}
	if scope := g.scope(); scope != "" || g.scopeAsked {
		resp.Scope = &scope
	}
	if refreshToken != "" {
		resp.RefreshLifetime = max(g.refreshExpiry.Sub(now), 0)
	}
	if g.user != nil && slices.Contains(g.oidc, "openid") {
		if resp.IDToken, err = s.issueIDToken(g, at, now); err != nil {
			if unusable := keysUnusable(err); unusable != nil {
				return Response{}, unusable
			}
			return Response{}, apierr.ErrServer.WithCause(err)
		}
	}
	return resp, nil
}

// startSession creates a refresh family for g and returns its first token.
// requested is the scope the client asked for, kept so refreshes can narrow it.
// The family's id is g.sid when the grant pre-assigned one (a code), else a
// new one. Its AuthTime is the login's time (g.authTime): the token state
// refuses a family whose login is at or before the user's cut-off, so a
// login (or a code from it) that predates "end every session" yields no
// session, and refreshes keep auth_time. It is issued now: its idle window
// and absolute expiry count from now, however old the browser login is;
// a family bound to a browser session (g.browserSession) ends no later than
// that session's absolute expiry, and each refresh checks the session
// (refreshGrant).
func (s *Service) startSession(ctx context.Context, g *grantSet, requested []string, now time.Time) (string, error) {
	if g.sid == "" {
		g.sid = newSID()
	}
	authTime := g.authTime
	if authTime.IsZero() || authTime.After(now) {
		authTime = now
	}
	rt := newRefreshToken(g.sid)
	idle, maxAge := s.cfg.RefreshIdleTTL, s.cfg.RefreshMaxAge
	if g.client.RefreshIdleTTL > 0 {
		idle = g.client.RefreshIdleTTL
	}
	if g.client.RefreshMaxAge > 0 {
		maxAge = g.client.RefreshMaxAge
	}
	fam := store.RefreshFamily{
		ID:               g.sid,
		UserID:           g.user.ID,
		ClientID:         g.client.ID,
		Scope:            strings.Join(g.permissions, " "),
		RequestedScope:   strings.Join(requested, " "),
		CreatedAt:        now,
		AuthTime:         authTime,
		AMR:              g.amr,
		TenantID:         g.tenant.ID,
		BrowserSessionID: g.browserSession,
		AbsoluteExpiry:   now.Add(maxAge),
		IdleTTL:          idle,
	}
	if g.recheck != nil {
		// When the client was granted the access (a code's issue, not
		// its redemption): the user's cut-off at the client judges the
		// session by it, as it judges the grant's access tokens.
		if granted := g.recheck.ClientGrantedAt(); !granted.IsZero() && granted.Before(now) {
			fam.GrantedAt = granted
		}
	}
	if g.browserSession != "" && !g.browserSessionExpiry.IsZero() && g.browserSessionExpiry.Before(fam.AbsoluteExpiry) {
		if !g.browserSessionExpiry.After(now) {
			return "", apierr.ErrInvalidGrant.WithDescription("The browser session ended while signing in. Sign in again.")
		}
		fam.AbsoluteExpiry = g.browserSessionExpiry
	}
	var err error
	if g.recheck != nil {
		// A failed check fails the grant like a failed creation: its
		// refresh token is never handed out.
		g.recheckRevoked, err = s.state.CreateFamilyAndCheck(ctx, fam, HashSecret(rt), *g.recheck)
		g.rechecked = err == nil
	} else {
		err = s.state.CreateFamily(ctx, fam, HashSecret(rt))
	}
	if err != nil {
		if errors.Is(err, store.ErrSessionsEnded) {
			// The login began before every session of the user was ended
			// (a password change or reset, say), or the user's grants to
			// the client were ended as it was made (the consent
			// withdrawn): it yields no session.
			return "", errEndedWhileSigningIn.WithCause(err)
		}
		return "", apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("create refresh family: %w", err))
	}
	g.refreshExpiry = fam.AbsoluteExpiry
	return rt, nil
}
