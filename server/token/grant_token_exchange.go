package token

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// RFC 8693 names.
const (
	// GrantTokenExchange is the token-exchange grant (RFC 8693 §2.1).
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	// TokenTypeAccessToken is the only token type Portcullis issues by
	// exchange (issued_token_type).
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	// TokenTypeIDToken is an OpenID Connect id token as the subject token
	// (an upstream identity provider's).
	TokenTypeIDToken = "urn:ietf:params:oauth:token-type:id_token"
	// TokenTypeAPIKey is a Portcullis API key (pcak_…) as the subject token.
	TokenTypeAPIKey = "urn:portcullis:params:oauth:token-type:api_key"
)

// errInvalidTarget answers an audience or resource Portcullis cannot issue
// for (RFC 8693 §2.2.2).
var errInvalidTarget = &apierr.Error{Code: "invalid_target", Status: http.StatusBadRequest,
	Description: "The audience and resource parameters are not supported; the token's audience is the client's."}

// SubjectTokenHandler turns one type of subject token into the user it
// stands for (RFC 8693 with pluggable subject_token_type handlers: upstream
// id tokens, API keys).
type SubjectTokenHandler interface {
	// ExchangeSubjectToken validates subjectToken for the authenticated
	// client and returns the user to issue for. Any refusal of the token
	// (invalid, unknown, revoked, expired, refused) is answered 400
	// invalid_request (§2.2.2): return an *apierr.Error with that code and a
	// description, or any error that is not an *apierr.Error (then a generic
	// description is used). An *apierr.Error with another code (a 503 when
	// a dependency is down) is answered as is. The handler records its own
	// refusals in the audit log.
	ExchangeSubjectToken(ctx context.Context, client store.Client, subjectToken string, meta RequestMeta) (ExchangedSubject, error)
}

// ExchangedSubject is the user a subject token stands for, and how the
// login is described.
type ExchangedSubject struct {
	User store.User
	// AMR is the login's authentication methods (RFC 8176), kept in the
	// tokens (and on refresh).
	AMR []string
	// AuthTime is when the person authenticated (an upstream id token's
	// auth_time, else its iat): the tokens' auth_time, and the login's
	// time against "end every session" (a login at or before the user's
	// cut-off is refused). Zero, or a time after the exchange, is the
	// exchange's time.
	AuthTime time.Time
	// Details are added to the login.succeeded event (method, provider…).
	Details map[string]string
	// Bound, when set, makes the exchange issue one access token bound to
	// a credential (an API key) instead of starting a login: see
	// BoundIssuance.
	Bound *BoundIssuance
}

// BoundIssuance is the exchange of a credential that is not a login (an API
// key): one short-lived access token and nothing else (no refresh token,
// no id token, no roles, no login recorded), whose sid is the credential's,
// so revoking that sid kills every token it gave.
type BoundIssuance struct {
	// SID is the tokens' sid (apikey.SessionID of the key).
	SID string
	// Permissions are the most the token may carry (the key's effective
	// scope); a request naming permissions narrows it, and the client's
	// own scopes bound it.
	Permissions []string
	// MaxTTL caps the token's lifetime below the client's (0: no cap).
	MaxTTL time.Duration
	// NotAfter: the token never outlives it (the key's expiry; zero: no
	// bound).
	NotAfter time.Time
}

// RegisterSubjectTokenType installs the handler for a subject_token_type.
// Call it while wiring, before the service serves requests.
func (s *Service) RegisterSubjectTokenType(tokenType string, h SubjectTokenHandler) {
	if s.subjectTokens == nil {
		s.subjectTokens = map[string]SubjectTokenHandler{}
	}
	s.subjectTokens[tokenType] = h
}

// SubjectTokenTypes reports whether any subject_token_type is served (so
// discovery advertises the grant).
func (s *Service) SubjectTokenTypes() int { return len(s.subjectTokens) }

// parseTokenExchange reads the RFC 8693 §2.1 parameters (shape only).
func parseTokenExchange(params map[string]string, req TokenRequest) (TokenRequest, error) {
	req.SubjectToken, req.SubjectTokenType = params["subject_token"], params["subject_token_type"]
	switch {
	case req.SubjectToken == "":
		return req, apierr.ErrInvalidRequest.WithDescription("The subject_token parameter is missing.")
	case req.SubjectTokenType == "":
		return req, apierr.ErrInvalidRequest.WithDescription("The subject_token_type parameter is missing.")
	case params["actor_token"] != "" || params["actor_token_type"] != "":
		return req, apierr.ErrInvalidRequest.WithDescription("Delegation (actor_token) is not supported.")
	case params["requested_token_type"] != "" && params["requested_token_type"] != TokenTypeAccessToken:
		return req, apierr.ErrInvalidRequest.WithDescription("Only access tokens are issued (requested_token_type %s).", TokenTypeAccessToken)
	case params["audience"] != "" || params["resource"] != "":
		return req, errInvalidTarget
	}
	return req, nil
}

// tokenExchangeGrant exchanges a subject token for a session of the user it
// stands for (RFC 8693 §2): the handler of its type finds the user, then the
// one issuance path issues as for any login, with the handler's amr and
// auth time (ExchangedSubject.AuthTime, at most now); a login at or before
// the user's cut-off is refused (invalid_request). A third-party client that names no permission gets
// none (as in the code flow). The answer adds issued_token_type.
func (s *Service) tokenExchangeGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	if s.tenancy != nil && req.SubjectTokenType == TokenTypeAccessToken {
		return s.switchTenant(ctx, client, req, meta)
	}
	h, ok := s.subjectTokens[req.SubjectTokenType]
	if !ok {
		return Response{}, apierr.ErrInvalidRequest.WithDescription("The subject_token_type '%s' is not supported.", SafeParamName(req.SubjectTokenType))
	}
	now := s.now()
	subj, err := h.ExchangeSubjectToken(ctx, client, req.SubjectToken, meta)
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return Response{}, err
		}
		return Response{}, apierr.ErrInvalidRequest.WithDescription("The subject token is invalid, expired or refused.").WithCause(err)
	}
	if !subj.User.Active {
		return Response{}, apierr.ErrInvalidRequest.WithDescription("The account is deactivated.")
	}
	if subj.Bound != nil {
		if err := s.boundTenant(ctx, client, req.Tenant); err != nil {
			return Response{}, err
		}
		resp, err := s.issueBound(client, subj.User, *subj.Bound, req.Scope, now)
		if err != nil {
			return Response{}, err
		}
		resp.IssuedTokenType = TokenTypeAccessToken
		return resp, nil
	}
	user, tn, err := s.loginTenant(ctx, client, subj.User, req.Tenant)
	if err != nil {
		return Response{}, err
	}
	// The login is when the person authenticated, not this exchange: a
	// user's cut-off since ("end every session") refuses it, checked after
	// issuing as for a code (voidAfterIssue), so none written while the
	// tokens are made is missed. The grant to the client is this exchange:
	// the user's cut-off at the client refuses it when written while the
	// tokens are made, not when written before (a consent given again).
	authTime := subj.AuthTime
	if authTime.IsZero() || authTime.After(now) {
		authTime = now
	}
	resp, g, err := s.issueLogin(ctx, client, user, req.Scope, now, loginInfo{authTime: authTime, amr: subj.AMR,
		onlyPermsNamed: ThirdPartyApp(client), tenant: tn,
		recheck: &store.AccessTokenRef{JTI: newJTI(authTime), UserID: user.ID, IssuedAt: authTime, ClientID: client.ID, GrantedAt: now}})
	if err == nil {
		err = s.voidAfterIssue(ctx, g, now)
	}
	if errors.Is(err, store.ErrSessionsEnded) {
		// A subject token refused by policy is invalid_request (RFC 8693
		// §2.2.2), and audited as the handler audits its own refusals.
		details := map[string]string{"grant": GrantTokenExchange, "subject_token_type": req.SubjectTokenType}
		maps.Copy(details, subj.Details)
		details["reason"] = "sessions_ended"
		s.audit.Record(ctx, store.AuditEvent{Action: "login.failed", Outcome: store.OutcomeFailure, TargetID: user.ID,
			ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, Details: details, TenantID: tn.ID})
		return Response{}, apierr.ErrInvalidRequest.WithDescription(
			"The subject token's sign-in was before every session of the account was ended. Sign in again.").WithCause(err)
	}
	if err != nil {
		return Response{}, err
	}
	resp.IssuedTokenType = TokenTypeAccessToken
	details := map[string]string{"sid": g.sid, "grant": GrantTokenExchange, "subject_token_type": req.SubjectTokenType}
	maps.Copy(details, subj.Details)
	s.audit.RecordLogin(ctx, store.AuditEvent{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: user.ID,
		TargetID: user.ID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, Details: details, TenantID: tn.ID, Time: now})
	return resp, nil
}

// issueBound issues the one access token of a BoundIssuance for user
// through client: the credential's permissions, narrowed to those the
// request names (when it names any; OIDC scopes are ignored, there is no id
// token) and to those the client may receive; no roles; the credential's
// sid; the client's lifetime capped by MaxTTL and NotAfter. Nothing else:
// no refresh token, no login recorded.
func (s *Service) issueBound(client store.Client, user store.User, b BoundIssuance, requested []string, now time.Time) (Response, error) {
	perms := slices.Clone(b.Permissions)
	if named := slices.DeleteFunc(slices.Clone(requested), policy.IsOIDCScope); len(named) > 0 {
		perms = slices.DeleteFunc(perms, func(p string) bool { return !slices.Contains(named, p) })
	}
	if client.Scopes != nil {
		perms = slices.DeleteFunc(perms, func(p string) bool { return !policy.Matches(client.Scopes, p) })
	}
	if perms == nil {
		perms = []string{}
	}
	ttl := time.Duration(s.accessTTL(client)) * time.Second
	if b.MaxTTL > 0 {
		ttl = min(ttl, b.MaxTTL)
	}
	if !b.NotAfter.IsZero() {
		ttl = min(ttl, b.NotAfter.Sub(now).Truncate(time.Second))
	}
	if ttl < time.Second {
		return Response{}, apierr.ErrInvalidRequest.WithDescription("The subject token expires now.")
	}
	g := grantSet{client: client, user: &user, permissions: perms, roles: []string{}, sid: b.SID, ttl: ttl, scopeAsked: len(requested) > 0}
	return s.respond(g, "", now)
}
