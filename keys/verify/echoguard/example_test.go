package echoguard_test

import (
	"log"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/keys/verify/echoguard"
)

// The Echo adapter takes the same guard and requirements as net/http.
func ExampleNew() {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: "https://auth.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	v, err := verify.New(keys, verify.Config{Issuer: "https://auth.example.com", Audience: "api"})
	if err != nil {
		log.Fatal(err)
	}
	g := echoguard.New(verify.NewGuard(v, verify.GuardOptions{
		Roles: verify.RoleLevels{"super_admin": 100, "admin": 80, "editor": 20, "viewer": 10},
	}))

	e := echo.New()
	e.GET("/me", func(c echo.Context) error {
		claims := echoguard.Claims(c)
		return c.JSON(http.StatusOK, map[string]any{"sub": claims.Subject, "roles": claims.Roles})
	}, g.Authenticate())
	e.GET("/projects", listProjects, g.RequireScope("projects:read"))
	e.POST("/projects", listProjects, g.RequireScope("projects:write"))
	e.GET("/admin/metrics", listProjects, g.RequireRole("admin"))
	e.DELETE("/projects/:id", listProjects, g.Require(verify.Any(verify.Role("admin"), verify.Scope("projects:admin"))))
	log.Fatal(e.Start("127.0.0.1:8081"))
}

func listProjects(c echo.Context) error { return c.NoContent(http.StatusOK) }
