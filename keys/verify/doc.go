// Package verify is the downstream side of Portcullis: what a resource server
// (an API that receives Portcullis access tokens) imports to check them
// offline and to enforce permissions and roles.
//
// It has six parts:
//
//   - RemoteKeySet fetches the issuer's JWKS (found through OpenID Connect
//     discovery or given explicitly), honours Cache-Control max-age and ETag,
//     refreshes in the background before the set expires, refetches on an
//     unknown kid at most once per UnknownKIDInterval, and keeps serving the
//     last good set while the issuer is briefly unreachable.
//   - Verifier checks an RFC 9068 JWT access token: compact JWS parsing, key
//     lookup by kid only, the algorithm fixed by the key (never none, never
//     HMAC), the signature, typ at+jwt, iss, aud, exp, nbf and iat with a small
//     leeway. Errors are typed (ErrExpired, ErrWrongAudience, …). A token whose
//     kid is known costs no network call.
//   - Guard is net/http middleware (and, through package echoguard, Echo
//     middleware) that answers RFC 6750 errors: 401 with WWW-Authenticate
//     Bearer error="invalid_token", 403 with error="insufficient_scope", 401
//     with error="insufficient_user_authentication" and acr_values="mfa" (RFC
//     9470) when MFA is required and the login had no second factor, and
//     puts the verified Claims in the request context (ClaimsFromContext).
//     Requirements (Scope, AnyScope, Role, AnyRole, MFA, Tenant, OwnTenant,
//     All, Any, Online) combine freely; Role honours a role hierarchy
//     (RoleLevels) as "this role or higher". A token of an organisation (a
//     tenant claim) holds its roles and permissions in that organisation
//     only: it meets Scope, AnyScope, Role and AnyRole only beside a Tenant
//     (or OwnTenant) requirement that is met, written before or after them,
//     so an organisation's admin never passes a platform route's
//     Role("admin"); platform tokens and API keys are judged on their claims.
//   - Introspector asks the issuer's RFC 7662 introspection endpoint whether a
//     token is still active, for routes that must see a revocation at once;
//     answers are cached briefly by token hash, and an unreachable endpoint
//     fails closed.
//   - API keys (pcak_…, see CheckAPIKey for the format): with
//     GuardOptions.APIKeys a Guard also accepts a key in an X-API-Key header
//     or as "Authorization: Bearer pcak_…". The format and checksum are
//     checked locally (a malformed key costs no request), then
//     Introspector.VerifyAPIKey asks the issuer, caching its answer at most
//     5 s by the key's SHA-256, and yields the same Claims as a token (no
//     roles, so a key never meets a Role requirement) with the same RFC 6750
//     answers; an unreachable endpoint fails closed (503).
//   - LogoutVerifier and LogoutHandler are a relying party's OpenID Connect
//     Back-Channel Logout 1.0 endpoint: the logout token is checked with the
//     same key lookup and signature check as access tokens, then as BCL §2.6
//     says (typ logout+jwt, iss, aud, iat, exp, the events member, no nonce,
//     sub or sid, a jti never accepted before). LoggedOut remembers the
//     sessions so ended and, as GuardOptions.Revocations, makes a Guard
//     refuse their access tokens.
//
// Every URL it fetches (issuer, JWKS, introspection endpoint, discovered
// endpoints, redirects) must be https://; plain http:// is accepted only for
// loopback hosts (127.0.0.0/8, ::1, localhost), and the constructors refuse
// anything else with an error wrapping ErrInsecureURL.
//
// This package must never import Portcullis's server or store packages, GORM
// or Redis (a test checks its import graph), never choose a key or an
// algorithm from the token itself (jku, x5u, jwk, x5c headers are ignored),
// never make a network call for a token whose key it holds or for a
// malformed API key, and never log, print or put a token, an API key or a
// client secret in an error.
package verify
