package server

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
)

func createTenant(svc *accounts.Service, c echo.Context) error {
	var body struct {
		Slug string `json:"slug"`
		Name string `json:"name"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	t, err := svc.CreateTenant(ctx(c), actorOf(c), body.Slug, body.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, t)
}

func updateTenant(svc *accounts.Service, c echo.Context) error {
	var body accounts.TenantChange
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	t, err := svc.UpdateTenant(ctx(c), actorOf(c), c.Param("id"), body)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func listTenants(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.ListTenants(ctx(c), actorOf(c), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func listTenantMembers(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.TenantMembers(ctx(c), actorOf(c), c.Param("id"), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

// addTenantMember takes {"user_id","role"} for an existing user (201 with
// the member) or {"email","role"} to invite one (201 with the invite).
func addTenantMember(svc *accounts.Service, c echo.Context) error {
	var body struct {
		UserID string `json:"user_id"`
		Email  string `json:"email"`
		Role   string `json:"role"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return err
	}
	switch {
	case body.UserID != "" && body.Email != "":
		return apierr.ErrInvalidRequest.WithDescription("Give user_id for an existing user or email to invite one, not both.")
	case body.Email != "":
		inv, err := svc.InviteTenantMember(ctx(c), actorOf(c), c.Param("id"), body.Email, body.Role)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, inv)
	case body.UserID == "":
		return apierr.ErrInvalidRequest.WithDescription("Give user_id for an existing user or email to invite one.")
	}
	m, err := svc.AddTenantMember(ctx(c), actorOf(c), c.Param("id"), body.UserID, body.Role)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, m)
}

func removeTenantMember(svc *accounts.Service, c echo.Context) error {
	if err := svc.RemoveTenantMember(ctx(c), actorOf(c), c.Param("id"), c.Param("user_id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
