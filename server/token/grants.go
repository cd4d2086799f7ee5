package token

import (
	"context"
	"slices"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// grantHandler is one grant type of the token endpoint, in its own file
// (grant_*.go). parse reads the grant's own parameters into req (shape only);
// exchange runs the grant for a client that authenticated and may use it.
type grantHandler struct {
	parse    func(params map[string]string, req *TokenRequest) error
	exchange func(s *Service, ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error)
}

// grantRegistry is the one list of grant types: parsing, dispatch and
// SupportedGrants (a test keeps it equal to this list) all read it.
var grantRegistry = map[string]grantHandler{
	GrantPassword:          {parse: parsePasswordGrant, exchange: (*Service).passwordGrant},
	GrantRefreshToken:      {parse: parseRefreshGrant, exchange: (*Service).refreshGrant},
	GrantClientCredentials: {parse: parseClientCredentialsGrant, exchange: (*Service).clientCredentialsGrant},
	GrantAuthorizationCode: {parse: parseAuthorizationCodeGrant, exchange: (*Service).authorizationCodeGrant},
	GrantTokenExchange:     {parse: parseTokenExchange, exchange: (*Service).tokenExchangeGrant},
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
	if !clientAllowsGrant(client, req.GrantType) {
		return Response{}, apierr.ErrUnauthorizedClient.WithDescription("The client may not use the %s grant.", req.GrantType)
	}
	resp, err := h.exchange(s, ctx, client, req, meta)
	if err == nil {
		s.metrics.TokenIssued(req.GrantType)
	}
	return resp, err
}

// registeredGrants returns the registry's grant types, sorted (for tests).
func registeredGrants() []string {
	out := make([]string, 0, len(grantRegistry))
	for g := range grantRegistry {
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
