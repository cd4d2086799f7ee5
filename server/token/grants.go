package token

import (
	"context"
	"slices"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// grantHandler is one grant type of the token endpoint, in its own file
// (grant_*.go). parse returns req with the grant's own parameters read into
// it (shape only; by value, so that the request stays off the heap);
// exchange runs the grant for a client that authenticated and may use it.
// A grant no client is registered with names the registered grant that
// allows it (via); label is the metrics label a grant whose name is a URN
// counts under.
type grantHandler struct {
	parse    func(params map[string]string, req TokenRequest) (TokenRequest, error)
	exchange func(s *Service, ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error)
	via      string
	label    string
}

// grantRegistry is the one list of grant types: parsing, dispatch and
// SupportedGrants (a test keeps the grants without via equal to it) all
// read it.
var grantRegistry = map[string]grantHandler{
	GrantPassword:          {parse: parsePasswordGrant, exchange: (*Service).passwordGrant},
	GrantRefreshToken:      {parse: parseRefreshGrant, exchange: (*Service).refreshGrant},
	GrantClientCredentials: {parse: parseClientCredentialsGrant, exchange: (*Service).clientCredentialsGrant},
	GrantAuthorizationCode: {parse: parseAuthorizationCodeGrant, exchange: (*Service).authorizationCodeGrant},
	GrantMFAOTP: {parse: parseMFAGrant("otp"), exchange: (*Service).mfaOTPGrant,
		via: GrantPassword, label: "mfa_otp"},
	GrantMFARecoveryCode: {parse: parseMFAGrant("recovery_code"), exchange: (*Service).mfaRecoveryCodeGrant,
		via: GrantPassword, label: "mfa_recovery_code"},
	GrantTokenExchange: {parse: parseTokenExchange, exchange: (*Service).tokenExchangeGrant, label: "token_exchange"},
}

// Exchange runs the token endpoint for an authenticated request.
func (s *Service) Exchange(ctx context.Context, req TokenRequest, meta RequestMeta) (Response, error) {
	client, err := s.AuthenticateClient(ctx, req.Client)
	if err != nil {
		return Response{}, err
	}
	h, ok := grantRegistry[req.GrantType]
	if !ok {
		return Response{}, apierr.ErrUnsupportedGrantType
	}
	registered, label := req.GrantType, req.GrantType
	if h.via != "" {
		registered = h.via
	}
	if h.label != "" {
		label = h.label
	}
	if !clientAllowsGrant(client, registered) {
		return Response{}, apierr.ErrUnauthorizedClient.WithDescription("The client may not use the %s grant.", req.GrantType)
	}
	// Nothing a grant spends before it signs (a refresh token's rotation, a
	// code, an mfa_token) is spent while the keys cannot sign: the tokens
	// would never be handed out, and the client's retry would count as
	// reuse, ending the session. 503, and the retry finds all as it was.
	if unusable := keysUnusable(s.signer.Usable()); unusable != nil {
		return Response{}, unusable
	}
	resp, err := h.exchange(s, ctx, client, req, meta)
	if err == nil {
		s.metrics.TokenIssued(label)
	}
	return resp, err
}

// registeredGrants returns the grant types a client is registered with,
// sorted (for tests).
func registeredGrants() []string {
	out := make([]string, 0, len(grantRegistry))
	for g, h := range grantRegistry {
		if h.via != "" {
			continue
		}
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// scopeError answers invalid_scope with the policy's reason (which names the
// offending scope and never holds a secret).
func scopeError(err error) error {
	return apierr.ErrInvalidScope.WithDescription("%s", err.Error()).WithCause(err)
}
