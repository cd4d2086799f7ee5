package server

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
)

// mountSessionViews mounts the person's own browser sessions and remembered
// consents (GET/DELETE /auth/sessions…, /auth/consents…) behind bearer. The
// admin equivalents are in adminRoutes.
func mountSessionViews(e *echo.Echo, svc *accounts.Service, bearer echo.MiddlewareFunc) {
	e.GET("/auth/sessions", func(c echo.Context) error {
		cursor, limit, err := pageParams(c)
		if err != nil {
			return err
		}
		page, err := svc.OwnSessions(ctx(c), actorOf(c), cursor, limit)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, page)
	}, noCache, bearer)
	e.DELETE("/auth/sessions/:sid", func(c echo.Context) error {
		if err := svc.EndOwnSession(ctx(c), actorOf(c), c.Param("sid")); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache, bearer)
	e.GET("/auth/consents", func(c echo.Context) error {
		cursor, limit, err := pageParams(c)
		if err != nil {
			return err
		}
		page, err := svc.OwnConsents(ctx(c), actorOf(c), cursor, limit)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, page)
	}, noCache, bearer)
	e.DELETE("/auth/consents/:client_id", func(c echo.Context) error {
		if err := svc.WithdrawOwnConsent(ctx(c), actorOf(c), c.Param("client_id")); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache, bearer)
}

func listUserSessions(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.UserSessionsAs(ctx(c), actorOf(c), c.Param("id"), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func endUserSession(svc *accounts.Service, c echo.Context) error {
	if err := svc.EndUserSession(ctx(c), actorOf(c), c.Param("id"), c.Param("sid")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func listUserConsents(svc *accounts.Service, c echo.Context) error {
	cursor, limit, err := pageParams(c)
	if err != nil {
		return err
	}
	page, err := svc.UserConsentsAs(ctx(c), actorOf(c), c.Param("id"), cursor, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func withdrawUserConsent(svc *accounts.Service, c echo.Context) error {
	if err := svc.WithdrawUserConsent(ctx(c), actorOf(c), c.Param("id"), c.Param("client_id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
