package token

import (
	"context"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// parseClientCredentialsGrant: the grant has no parameters of its own (RFC 6749 §4.4.2).
func parseClientCredentialsGrant(_ map[string]string, req TokenRequest) (TokenRequest, error) {
	return req, nil
}

func (s *Service) clientCredentialsGrant(ctx context.Context, client store.Client, req TokenRequest, _ RequestMeta) (Response, error) {
	if client.Public {
		return Response{}, apierr.ErrUnauthorizedClient.WithDescription("Public clients may not use client_credentials.")
	}
	// Only the scopes listed for the client (none when none were listed).
	allowed := client.Scopes
	if allowed == nil {
		allowed = []string{}
	}
	grant, err := policy.ResolveClientScope(req.Scope, allowed)
	if err != nil {
		return Response{}, scopeError(err)
	}
	// A client of an organisation always acts in it.
	tn, err := s.clientTenant(ctx, client)
	if err != nil {
		return Response{}, err
	}
	g := grantSet{client: client, permissions: grant.Permissions, roles: []string{}, tenant: tn, scopeAsked: len(req.Scope) > 0}
	return s.respond(g, "", s.now())
}
