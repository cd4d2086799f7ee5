package echoguard

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// contextKey is where the claims are kept in the echo.Context.
const contextKey = "portcullis.verify.claims"

// Guard is Echo middleware over a verify.Guard.
type Guard struct{ g *verify.Guard }

// New returns Echo middleware over g.
func New(g *verify.Guard) *Guard { return &Guard{g: g} }

// Authenticate admits any valid access token.
func (eg *Guard) Authenticate() echo.MiddlewareFunc { return eg.Require() }

// RequireScope admits tokens granting every one of perms (a token of an
// organisation only with RequireTenant: see verify.Scope).
func (eg *Guard) RequireScope(perms ...string) echo.MiddlewareFunc {
	return eg.Require(verify.Scope(perms...))
}

// RequireMFA admits tokens whose user signed in with a second factor
// (verify.MFA); others get 401 insufficient_user_authentication.
func (eg *Guard) RequireMFA() echo.MiddlewareFunc { return eg.Require(verify.MFA()) }

// RequireAnyScope admits tokens granting at least one of perms (a token of
// an organisation only with RequireTenant, as RequireScope).
func (eg *Guard) RequireAnyScope(perms ...string) echo.MiddlewareFunc {
	return eg.Require(verify.AnyScope(perms...))
}

// RequireRole admits tokens carrying role or a higher one (see
// verify.RoleLevels); never a token of an organisation, whose roles are
// held there: eg.RequireTenant("tenant", verify.Role(role)) asks for the
// role within the organisation the route names (see verify.Role).
func (eg *Guard) RequireRole(role string) echo.MiddlewareFunc {
	return eg.Require(verify.Role(role))
}

// RequireTenant admits tokens whose `tenant` claim equals, exactly, the
// route parameter param (verify.Tenant); a missing claim, an empty
// parameter or another organisation's token is 403. Other requirements
// may be added, and the token's roles and permissions then count for them:
// eg.RequireTenant("tenant", verify.Scope("projects:read")).
func (eg *Guard) RequireTenant(param string, reqs ...verify.Requirement) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			value := c.Param(param)
			tenant := verify.Tenant(func(*http.Request) string { return value })
			return eg.Require(append(slices.Clone(reqs), tenant)...)(next)(c)
		}
	}
}

// Require admits valid tokens meeting every requirement. A refused request
// is answered here (status, WWW-Authenticate, JSON body) and the handler
// chain ends without an error, so Echo's error handler does not rewrite the
// RFC 6750 answer.
func (eg *Guard) Require(reqs ...verify.Requirement) echo.MiddlewareFunc {
	req := verify.All(reqs...)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			claims, d := eg.g.Check(r, req)
			if d != nil {
				d.Write(c.Response())
				return nil
			}
			c.SetRequest(r.WithContext(verify.ContextWithClaims(r.Context(), claims)))
			c.Set(contextKey, claims)
			return next(c)
		}
	}
}

// Claims returns the verified claims of the request, or nil outside a guarded route.
func Claims(c echo.Context) *verify.Claims {
	claims, _ := c.Get(contextKey).(*verify.Claims)
	return claims
}
