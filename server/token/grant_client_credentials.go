package token

import (
	"context"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// parseClientCredentialsGrant: the grant has no parameters of its own (RFC 6749 §4.4.2).
func parseClientCredentialsGrant(map[string]string, *TokenRequest) error { return nil }

func (s *Service) clientCredentialsGrant(_ context.Context, client store.Client, req TokenRequest, _ RequestMeta) (Response, error) {
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
	g := grantSet{client: client, permissions: grant.Permissions, roles: []string{}}
	return s.respond(g, "", s.now())
}
