package console

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/token"
)

// cursorPage returns the page of list (sorted by key) after cursor, and
// the cursor of the next page: for the lists the service returns whole
// (clients, keys), which are short.
func cursorPage[T any](list []T, key func(T) string, cursor string) ([]T, string) {
	slices.SortFunc(list, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	start := 0
	if cursor != "" {
		start, _ = slices.BinarySearchFunc(list, cursor, func(t T, c string) int {
			if key(t) <= c {
				return -1
			}
			return 1
		})
	}
	end := min(start+PageSize, len(list))
	next := ""
	if end < len(list) {
		next = key(list[end-1])
	}
	return list[start:end], next
}

type clientsData struct {
	Clients  []clients.ClientView
	Next     string
	MayWrite bool
	Grants   []string
	Form     clientForm
	// CodeClients are the clients whose redirect URIs may be changed: those
	// of the code flow but the built-in one.
	CodeClients []clients.ClientView
}

type clientForm struct {
	ID, Name, Type, RedirectURIs, Scopes string
	Grants                               []string
}

// clientGrants are the grants the create form offers.
var clientGrants = []string{token.GrantAuthorizationCode, token.GrantRefreshToken, token.GrantClientCredentials, token.GrantPassword}

func (c *Console) clientsScreen(r *request) error {
	return c.showClients(r, http.StatusOK, view{}, clientForm{})
}

func (c *Console) showClients(r *request, status int, v view, f clientForm) error {
	if ok, err := c.allow(r, policy.PermClientsRead); !ok {
		return err
	}
	list, err := c.d.Accounts.ListClientsAs(r.ctx(), r.actor)
	if err != nil {
		return c.fail(r.Context, r, err)
	}
	d := clientsData{MayWrite: r.may(policy.PermClientsWrite), Grants: clientGrants, Form: f}
	var next string
	d.Clients, next = cursorPage(list, func(cv clients.ClientView) string { return cv.ClientID }, r.QueryParam("cursor"))
	d.Next = c.nextPage(r, "cursor", next)
	for _, cv := range list {
		if cv.ClientID != c.cfg.ClientID && slices.Contains(cv.Grants, token.GrantAuthorizationCode) {
			d.CodeClients = append(d.CodeClients, cv)
		}
	}
	v.Title, v.Screen, v.Data = "Clients", "clients", d
	return c.render(r, status, v)
}

func (c *Console) clientAction(r *request) error {
	if ok, err := c.allow(r, policy.PermClientsWrite); !ok {
		return err
	}
	switch r.FormValue("action") {
	case "create":
		form, _ := r.FormParams()
		f := clientForm{ID: strings.TrimSpace(r.FormValue("client_id")), Name: strings.TrimSpace(r.FormValue("name")),
			Type: r.FormValue("type"), RedirectURIs: r.FormValue("redirect_uris"), Scopes: r.FormValue("scopes"), Grants: form["grants"]}
		spec := clients.Spec{ID: f.ID, Name: f.Name, Public: f.Type == "public", Grants: f.Grants,
			RedirectURIs: strings.Fields(f.RedirectURIs)}
		if s := strings.Fields(f.Scopes); len(s) > 0 {
			spec.Scopes = s
		}
		created, err := c.d.Accounts.CreateClient(r.ctx(), r.actor, spec)
		if err != nil {
			return c.clientRefused(r, f, err)
		}
		v := view{Notice: "Created the client " + created.ClientID + "."}
		if created.ClientSecret != "" {
			v.Secret = &secret{Label: "Client secret of " + created.ClientID, Value: created.ClientSecret,
				Note: "Copy it now: it is shown this once. Rotate it to get a new one."}
		}
		return c.showClients(r, http.StatusCreated, v, clientForm{})
	case "rotate":
		id := r.FormValue("client_id")
		s, err := c.d.Accounts.RotateClientSecret(r.ctx(), r.actor, id)
		if err != nil {
			return c.clientRefused(r, clientForm{}, err)
		}
		return c.showClients(r, http.StatusOK, view{Notice: "Rotated the secret of " + id + "; the old one stopped working.",
			Secret: &secret{Label: "New client secret of " + id, Value: s, Note: "Copy it now: it is shown this once."}}, clientForm{})
	case "redirect_uris":
		id := r.FormValue("client_id")
		cv, err := c.d.Accounts.SetClientRedirectURIs(r.ctx(), r.actor, id, strings.Fields(r.FormValue("redirect_uris")))
		if err != nil {
			return c.clientRefused(r, clientForm{}, err)
		}
		return c.showClients(r, http.StatusOK, view{Notice: "Changed the redirect URIs of " + cv.ClientID + "."}, clientForm{})
	}
	return c.showClients(r, http.StatusBadRequest, view{Error: "Unknown action."}, clientForm{})
}

func (c *Console) clientRefused(r *request, f clientForm, err error) error {
	if errorStatus(err) >= 500 {
		return c.fail(r.Context, r, err)
	}
	return c.showClients(r, errorStatus(err), view{Error: errorText(err)}, f)
}

func (c *Console) roles(r *request) error {
	if ok, err := c.allow(r, policy.PermRolesRead); !ok {
		return err
	}
	return c.render(r, http.StatusOK, view{Title: "Roles", Screen: "roles", Data: c.d.Accounts.Roles()})
}

type keysData struct {
	Keys      []keys.KeyInfo
	Next      string
	MayRotate bool
}

func (c *Console) keysScreen(r *request) error { return c.showKeys(r, http.StatusOK, view{}) }

func (c *Console) showKeys(r *request, status int, v view) error {
	if ok, err := c.allow(r, policy.PermKeysRead); !ok {
		return err
	}
	list, err := c.d.Accounts.ListKeysAs(r.ctx(), r.actor)
	if err != nil {
		return c.fail(r.Context, r, err)
	}
	d := keysData{MayRotate: r.may(policy.PermKeysRotate)}
	// Newest first: the key id is random, so order by creation.
	slices.SortFunc(list, func(a, b keys.KeyInfo) int { return b.CreatedAt.Compare(a.CreatedAt) })
	d.Keys = list
	v.Title, v.Screen, v.Data = "Signing keys", "keys", d
	return c.render(r, status, v)
}

func (c *Console) keyAction(r *request) error {
	if ok, err := c.allow(r, policy.PermKeysRotate); !ok {
		return err
	}
	var notice string
	switch r.FormValue("action") {
	case "rotate":
		rot, err := c.d.Accounts.RotateKeys(r.ctx(), r.actor, r.FormValue("force") == "1")
		if err != nil {
			return c.keyRefused(r, err)
		}
		notice = "Rotated: " + rot.Activated.KID + " signs now; " + rot.Next.KID + " is published as the next key."
	case "revoke":
		kid := r.FormValue("kid")
		if kid == "" || r.FormValue("confirm") != kid {
			return c.showKeys(r, http.StatusBadRequest, view{Error: "Type the key id exactly to confirm the revocation. Nothing was changed."})
		}
		if _, err := c.d.Accounts.RevokeKey(r.ctx(), r.actor, kid); err != nil {
			return c.keyRefused(r, err)
		}
		notice = "Revoked " + kid + ": it left the JWKS and every token it signed is refused."
	default:
		return c.showKeys(r, http.StatusBadRequest, view{Error: "Unknown action."})
	}
	return c.showKeys(r, http.StatusOK, view{Notice: notice})
}

func (c *Console) keyRefused(r *request, err error) error {
	// A change stored but not reloaded here is shown as made (its answer
	// says so), not as a fault that may not have been completed.
	if errorStatus(err) >= 500 && !errors.Is(err, keys.ErrReloadAfterCommit) {
		return c.fail(r.Context, r, err)
	}
	return c.showKeys(r, errorStatus(err), view{Error: errorText(err)})
}
