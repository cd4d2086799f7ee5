package server

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
)

// listUserIdentities answers GET /admin/users/{id}/identities: the user's
// links to upstream identity providers.
func listUserIdentities(svc *accounts.Service, c echo.Context) error {
	list, err := svc.UserIdentitiesAs(ctx(c), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, list)
}

// unlinkUserIdentity answers DELETE /admin/users/{id}/identities/{provider}
// (204), under the privilege ceiling.
func unlinkUserIdentity(svc *accounts.Service, c echo.Context) error {
	if err := svc.UnlinkIdentity(ctx(c), actorOf(c), c.Param("id"), c.Param("provider")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
