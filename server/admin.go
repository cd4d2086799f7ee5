package server

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/token"
)

// AdminRoute is one /admin endpoint and the permission it requires.
type AdminRoute struct {
	Method     string
	Path       string // Echo syntax, :id for a parameter
	Permission string
}

// adminRoute is an AdminRoute with its handler.
type adminRoute struct {
	AdminRoute
	handle func(svc *accounts.Service, c echo.Context) error
}

var adminRoutes = []adminRoute{
	{AdminRoute{http.MethodGet, "/admin/users", policy.PermUsersRead}, listUsers},
	{AdminRoute{http.MethodPost, "/admin/users", policy.PermUsersWrite}, createUser},
	{AdminRoute{http.MethodGet, "/admin/users/:id", policy.PermUsersRead}, getUser},
	{AdminRoute{http.MethodPatch, "/admin/users/:id", policy.PermUsersWrite}, patchUser},
	{AdminRoute{http.MethodDelete, "/admin/users/:id", policy.PermUsersWrite}, deleteUser},
	{AdminRoute{http.MethodPost, "/admin/users/:id/roles", policy.PermRolesAssign}, grantRole},
	{AdminRoute{http.MethodDelete, "/admin/users/:id/roles/:role", policy.PermRolesAssign}, revokeRole},
	{AdminRoute{http.MethodPost, "/admin/users/:id/temp-password", policy.PermUsersWrite}, setTempPassword},
	{AdminRoute{http.MethodPost, "/admin/users/:id/password-reset", policy.PermUsersWrite}, requestReset},
	{AdminRoute{http.MethodPost, "/admin/users/:id/sessions/revoke", policy.PermUsersWrite}, revokeSessions},
	{AdminRoute{http.MethodPost, "/admin/users/:id/mfa/reset", policy.PermUsersWrite}, resetMFA},
	{AdminRoute{http.MethodGet, "/admin/users/:id/sessions", policy.PermUsersRead}, listUserSessions},
	{AdminRoute{http.MethodDelete, "/admin/users/:id/sessions/:sid", policy.PermUsersWrite}, endUserSession},
	{AdminRoute{http.MethodGet, "/admin/users/:id/consents", policy.PermUsersRead}, listUserConsents},
	{AdminRoute{http.MethodDelete, "/admin/users/:id/consents/:client_id", policy.PermUsersWrite}, withdrawUserConsent},
	{AdminRoute{http.MethodGet, "/admin/users/:id/identities", policy.PermUsersRead}, listUserIdentities},
	{AdminRoute{http.MethodDelete, "/admin/users/:id/identities/:provider", policy.PermUsersWrite}, unlinkUserIdentity},
	{AdminRoute{http.MethodPost, "/admin/users/:id/api-keys", policy.PermUsersWrite}, createMachineAPIKey},
	{AdminRoute{http.MethodGet, "/admin/users/:id/api-keys", policy.PermUsersRead}, listMachineAPIKeys},
	{AdminRoute{http.MethodDelete, "/admin/users/:id/api-keys/:key_id", policy.PermUsersWrite}, revokeMachineAPIKey},
	{AdminRoute{http.MethodPost, "/admin/invites", policy.PermUsersInvite}, createInvite},
	{AdminRoute{http.MethodGet, "/admin/invites", policy.PermUsersInvite}, listInvites},
	{AdminRoute{http.MethodDelete, "/admin/invites/:id", policy.PermUsersInvite}, revokeInvite},
	{AdminRoute{http.MethodGet, "/admin/roles", policy.PermRolesRead}, listRoles},
	{AdminRoute{http.MethodGet, "/admin/clients", policy.PermClientsRead}, listClients},
	{AdminRoute{http.MethodPost, "/admin/clients", policy.PermClientsWrite}, createClient},
	{AdminRoute{http.MethodDelete, "/admin/clients/:id", policy.PermClientsWrite}, deleteClient},
	{AdminRoute{http.MethodGet, "/admin/keys", policy.PermKeysRead}, listKeys},
	{AdminRoute{http.MethodPost, "/admin/keys/rotate", policy.PermKeysRotate}, rotateKeys},
	{AdminRoute{http.MethodGet, "/admin/audit", policy.PermAuditRead}, listAudit},
	// Organisations (PORTCULLIS_TENANTS=on; 404 while off).
	{AdminRoute{http.MethodPost, "/admin/tenants", policy.PermUsersWrite}, createTenant},
	{AdminRoute{http.MethodGet, "/admin/tenants", policy.PermUsersRead}, listTenants},
	{AdminRoute{http.MethodPatch, "/admin/tenants/:id", policy.PermUsersWrite}, updateTenant},
	{AdminRoute{http.MethodGet, "/admin/tenants/:id/members", policy.PermUsersRead}, listTenantMembers},
	{AdminRoute{http.MethodPost, "/admin/tenants/:id/members", policy.PermRolesAssign}, addTenantMember},
	{AdminRoute{http.MethodDelete, "/admin/tenants/:id/members/:user_id", policy.PermRolesAssign}, removeTenantMember},
}

// AdminRoutes lists every /admin endpoint with the permission it requires.
func AdminRoutes() []AdminRoute {
	out := make([]AdminRoute, len(adminRoutes))
	for i, r := range adminRoutes {
		out[i] = r.AdminRoute
	}
	return out
}

// MountAdmin mounts the /admin API. Every route needs a bearer access token
// of a user whose aud holds the issuer (401 without, RequireAdminBearer) and
// whose scope holds the route's permission (403
// insufficient_scope without; a token of a user who must change their
// password holds none). Permissions are checked, never role names; the
// privilege ceiling is checked by the accounts service with the actor's
// current roles.
func (s *Server) MountAdmin(svc *accounts.Service, tokens *token.Service) {
	bearer := RequireAdminBearer(tokens)
	for _, r := range adminRoutes {
		handle := r.handle
		s.echo.Add(r.Method, r.Path, func(c echo.Context) error { return handle(svc, c) },
			noCache, bearer, requirePermission(r.Permission))
	}
}

// requirePermission answers 403 insufficient_scope (RFC 6750 §3.1) unless the
// token's scope covers perm: accounts.RequirePermission, the one check the
// console makes too.
func requirePermission(perm string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := accounts.RequirePermission(Claims(c).Scopes(), perm); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// query returns the single value of a query parameter; a repeated one is 400.
func query(c echo.Context, name string) (string, error) {
	vs := c.QueryParams()[name]
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", apierr.ErrInvalidRequest.WithDescription("The query parameter '%s' is given more than once.", name)
}

// pageParams reads cursor and limit.
func pageParams(c echo.Context) (cursor string, limit int, err error) {
	if cursor, err = query(c, "cursor"); err != nil {
		return "", 0, err
	}
	raw, err := query(c, "limit")
	if err != nil || raw == "" {
		return cursor, 0, err
	}
	n, perr := strconv.Atoi(raw)
	if perr != nil || n < 1 || n > 200 {
		return "", 0, apierr.ErrInvalidRequest.WithDescription("limit must be a whole number from 1 to 200.")
	}
	return cursor, n, nil
}

func ctx(c echo.Context) context.Context { return c.Request().Context() }

func listUsers(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	email, err := query(c, "email")
	if err != nil {
		return err
	}
	q, err := query(c, "q")
	if err != nil {
		return err
	}
	page, err := svc.ListUsersAs(ctx(c), actorOf(c), accounts.UserQuery{Email: email, Query: q, Cursor: cursor, Limit: limit})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func createUser(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Kind  string   `json:"kind"`
		Name  string   `json:"name"`
		Roles []string `json:"roles"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	u, err := svc.CreateUser(ctx(c), actorOf(c), accounts.NewUser{Kind: body.Kind, Name: body.Name, Roles: body.Roles})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func getUser(svc *accounts.Service, c echo.Context) error {
	u, err := svc.GetUserAs(ctx(c), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func patchUser(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Active *bool   `json:"active"`
		Name   *string `json:"name"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	u, err := svc.UpdateUser(ctx(c), actorOf(c), c.Param("id"), accounts.UserPatch{Active: body.Active, Name: body.Name})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func deleteUser(svc *accounts.Service, c echo.Context) error {
	if err := svc.DeleteUser(ctx(c), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func grantRole(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Role string `json:"role"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	u, err := svc.GrantRole(ctx(c), actorOf(c), c.Param("id"), body.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func revokeRole(svc *accounts.Service, c echo.Context) error {
	u, err := svc.RevokeRole(ctx(c), actorOf(c), c.Param("id"), c.Param("role"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func setTempPassword(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	u, err := svc.SetTemporaryPassword(ctx(c), actorOf(c), c.Param("id"), body.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func requestReset(svc *accounts.Service, c echo.Context) error {
	if err := decodeJSON(c, &struct{}{}, true); err != nil {
		return err
	}
	sent, err := svc.RequestPasswordReset(ctx(c), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, sent)
}

func revokeSessions(svc *accounts.Service, c echo.Context) error {
	if err := decodeJSON(c, &struct{}{}, true); err != nil {
		return err
	}
	if err := svc.RevokeSessions(ctx(c), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func resetMFA(svc *accounts.Service, c echo.Context) error {
	if err := decodeJSON(c, &struct{}{}, true); err != nil {
		return err
	}
	if err := svc.ResetMFA(ctx(c), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func createInvite(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Email string `json:"email"`
		Role  string `json:"role"`
		Kind  string `json:"kind"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	inv, err := svc.CreateInviteOfKind(ctx(c), actorOf(c), body.Kind, body.Email, body.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, inv)
}

func listInvites(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.ListInvitesAs(ctx(c), actorOf(c), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func revokeInvite(svc *accounts.Service, c echo.Context) error {
	inv, err := svc.RevokeInvite(ctx(c), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, inv)
}

func listRoles(svc *accounts.Service, c echo.Context) error {
	return c.JSON(http.StatusOK, accounts.Page[policy.Role]{Items: svc.Roles()})
}

func listClients(svc *accounts.Service, c echo.Context) error {
	list, err := svc.ListClientsAs(ctx(c), actorOf(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, accounts.Page[clients.ClientView]{Items: list})
}

// maxTTLSeconds bounds a lifetime in seconds so that it converts to a
// time.Duration without overflow.
const maxTTLSeconds = int64(math.MaxInt64 / int64(time.Second))

func createClient(svc *accounts.Service, c echo.Context) error {
	var body struct {
		ClientID       string   `json:"client_id"`
		Name           string   `json:"name"`
		Public         bool     `json:"public"`
		Grants         []string `json:"grants"`
		Scopes         []string `json:"scopes"` // absent or null: every permission; []: none
		Audiences      []string `json:"audiences"`
		AccessTokenTTL int64    `json:"access_token_ttl"` // seconds; 0: the server default

		RedirectURIs           []string `json:"redirect_uris"`
		PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris"`
		FirstParty             bool     `json:"first_party"`
		ApplicationType        string   `json:"application_type"` // absent: web
		RequirePKCE            *bool    `json:"require_pkce"`     // absent or null: true
		BackchannelLogoutURI   string   `json:"backchannel_logout_uri"`
		LogoURI                string   `json:"logo_uri"`
		ClientURI              string   `json:"client_uri"`

		RequirePAR bool `json:"require_pushed_authorization_requests"`

		RefreshTokenDelivery string   `json:"refresh_token_delivery"` // absent: body
		AllowedOrigins       []string `json:"allowed_origins"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	// The cap (PORTCULLIS_MAX_CLIENT_TOKEN_TTL) is checked by clients.Spec.Validate;
	// this only keeps the conversion to a duration from overflowing.
	if body.AccessTokenTTL < 0 || body.AccessTokenTTL > maxTTLSeconds {
		return apierr.ErrInvalidRequest.WithDescription("access_token_ttl must be a number of seconds from 0 to the server's maximum.")
	}
	created, err := svc.CreateClient(ctx(c), actorOf(c), clients.Spec{ID: body.ClientID, Name: body.Name, Public: body.Public,
		Grants: body.Grants, Scopes: body.Scopes, Audiences: body.Audiences,
		AccessTokenTTL: time.Duration(body.AccessTokenTTL) * time.Second,
		RedirectURIs:   body.RedirectURIs, PostLogoutRedirectURIs: body.PostLogoutRedirectURIs,
		FirstParty: body.FirstParty, ApplicationType: body.ApplicationType, RequirePKCE: body.RequirePKCE,
		BackchannelLogoutURI: body.BackchannelLogoutURI, LogoURI: body.LogoURI, ClientURI: body.ClientURI,
		RequirePushedAuthorizationRequests: body.RequirePAR,
		RefreshTokenDelivery:               body.RefreshTokenDelivery, AllowedOrigins: body.AllowedOrigins})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, created)
}

func deleteClient(svc *accounts.Service, c echo.Context) error {
	if err := svc.DeleteClient(ctx(c), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func listKeys(svc *accounts.Service, c echo.Context) error {
	list, err := svc.ListKeysAs(ctx(c), actorOf(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, accounts.Page[keys.KeyInfo]{Items: list})
}

func rotateKeys(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Force bool `json:"force"`
	}
	if err := decodeJSON(c, &body, true); err != nil {
		return err
	}
	rot, err := svc.RotateKeys(ctx(c), actorOf(c), body.Force)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rot)
}

func listAudit(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	q := accounts.AuditQuery{Cursor: cursor, Limit: limit}
	for name, dst := range map[string]*string{"action": &q.Action, "actor_id": &q.ActorID, "target_id": &q.TargetID} {
		if *dst, err = query(c, name); err != nil {
			return err
		}
	}
	for name, dst := range map[string]*time.Time{"since": &q.Since, "until": &q.Until} {
		raw, err := query(c, name)
		if err != nil {
			return err
		}
		if raw == "" {
			continue
		}
		t, perr := time.Parse(time.RFC3339Nano, raw)
		if perr != nil {
			return apierr.ErrInvalidRequest.WithDescription("%s must be an RFC 3339 time such as 2024-05-01T12:00:00Z.", name)
		}
		*dst = t
	}
	page, err := svc.ListAuditAs(ctx(c), actorOf(c), q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}
