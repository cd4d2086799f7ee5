package server

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/apikeys"
)

// mountOwnAPIKeys mounts the person's own API keys (POST/GET
// /auth/api-keys, DELETE /auth/api-keys/{id}) behind bearer. The admin
// equivalents for machine users are in adminRoutes.
func mountOwnAPIKeys(e *echo.Echo, svc *accounts.Service, bearer echo.MiddlewareFunc) {
	e.POST("/auth/api-keys", func(c echo.Context) error {
		req, err := apiKeyRequest(c)
		if err != nil {
			return err
		}
		created, err := svc.CreateOwnAPIKey(ctx(c), actorOf(c), req)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, created)
	}, noCache, bearer)
	e.GET("/auth/api-keys", func(c echo.Context) error {
		cursor, limit, err := pageParams(c)
		if err != nil {
			return err
		}
		page, err := svc.ListOwnAPIKeys(ctx(c), actorOf(c), cursor, limit)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, page)
	}, noCache, bearer)
	e.DELETE("/auth/api-keys/:id", func(c echo.Context) error {
		if err := svc.RevokeOwnAPIKey(ctx(c), actorOf(c), c.Param("id")); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache, bearer)
}

// apiKeyRequest reads the body of a key's creation:
// {"name","scopes":[…],"expires_at"?} with expires_at in RFC 3339.
func apiKeyRequest(c echo.Context) (apikeys.CreateRequest, error) {
	var body struct {
		Name      string   `json:"name"`
		Scopes    []string `json:"scopes"`
		ExpiresAt *string  `json:"expires_at"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return apikeys.CreateRequest{}, err
	}
	req := apikeys.CreateRequest{Name: body.Name, Scopes: body.Scopes}
	if body.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339, *body.ExpiresAt)
		if err != nil {
			return apikeys.CreateRequest{}, apierr.ErrInvalidRequest.WithDescription(
				"expires_at must be an RFC 3339 time such as 2030-05-01T12:00:00Z.")
		}
		req.ExpiresAt = &t
	}
	return req, nil
}

func createMachineAPIKey(svc *accounts.Service, c echo.Context) error {
	req, err := apiKeyRequest(c)
	if err != nil {
		return err
	}
	created, err := svc.CreateMachineAPIKey(ctx(c), actorOf(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, created)
}

func listMachineAPIKeys(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.ListMachineAPIKeys(ctx(c), actorOf(c), c.Param("id"), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func revokeMachineAPIKey(svc *accounts.Service, c echo.Context) error {
	if err := svc.RevokeMachineAPIKey(ctx(c), actorOf(c), c.Param("id"), c.Param("key_id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
