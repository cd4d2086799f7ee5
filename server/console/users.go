package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/store"
)

// allow renders the 403 page unless the operator holds perm
// (accounts.RequirePermission); ok reports whether to go on.
func (c *Console) allow(r *request, perm string) (ok bool, err error) {
	if e := accounts.RequirePermission(r.perms, perm); e != nil {
		return false, c.render(r, http.StatusForbidden, view{Title: "Not allowed", Kind: "error",
			Message: "You do not hold the permission " + perm + ", which this needs. Nothing was changed."})
	}
	return true, nil
}

// nextPage is the link to the page after this one, keeping the query but
// the cursor named name ("" when there is none).
func (c *Console) nextPage(r *request, name, cursor string) string {
	if cursor == "" {
		return ""
	}
	q := url.Values{}
	for k, v := range r.QueryParams() {
		q[k] = v
	}
	q.Set(name, cursor)
	return c.base() + r.Request().URL.Path + "?" + q.Encode()
}

type usersData struct {
	Query    string
	Users    []accounts.User
	Next     string
	MayWrite bool
	Roles    []string // for a new machine user; none without roles:assign
}

func (c *Console) users(r *request) error { return c.showUsers(r, http.StatusOK, view{}) }

func (c *Console) showUsers(r *request, status int, v view) error {
	if ok, err := c.allow(r, policy.PermUsersRead); !ok {
		return err
	}
	q := strings.TrimSpace(r.QueryParam("q"))
	v.Title, v.Screen = "Users", "users"
	page, err := c.d.Accounts.ListUsersAs(r.ctx(), r.actor, accounts.UserQuery{Query: q, Cursor: r.QueryParam("cursor"), Limit: PageSize})
	d := usersData{Query: q, Users: page.Items, Next: c.nextPage(r, "cursor", page.NextCursor), MayWrite: r.may(policy.PermUsersWrite)}
	if r.may(policy.PermRolesAssign) { // giving a new machine user roles needs it (accounts.Service.CreateUser)
		for _, role := range c.d.Accounts.Roles() {
			d.Roles = append(d.Roles, role.Name)
		}
	}
	v.Data = d
	if err != nil {
		return c.refused(r, 0, v, err)
	}
	return c.render(r, status, v)
}

// newMachineUser creates a machine user (people are invited) holding the
// role chosen, if any, under the privilege ceiling; its API keys are then
// made on its page.
func (c *Console) newMachineUser(r *request) error {
	if ok, err := c.allow(r, policy.PermUsersWrite); !ok {
		return err
	}
	nu := accounts.NewUser{Kind: store.UserMachine, Name: r.FormValue("name")}
	if role := r.FormValue("role"); role != "" {
		nu.Roles = []string{role}
	}
	u, err := c.d.Accounts.CreateUser(r.ctx(), r.actor, nu)
	if err != nil {
		if errorStatus(err) >= 500 {
			return c.fail(r.Context, r, err)
		}
		return c.showUsers(r, errorStatus(err), view{Error: errorText(err)})
	}
	return c.showUsers(r, http.StatusCreated, view{Notice: "Created the machine user " + u.Name + " (" + u.ID + "); give it API keys on its page."})
}

type userData struct {
	User                  accounts.User
	Roles                 []string // the policy's roles, for granting
	Sessions              []accounts.BrowserSession
	SessionsNext          string
	Keys                  []apikeys.View
	KeysNext              string
	KeysError             string
	MayWrite, MayAssign   bool
	Machine               bool
	SessionsError         string
	AuditHref, SelfAction string
}

func (c *Console) user(r *request) error { return c.showUser(r, http.StatusOK, view{}) }

// showUser renders the detail of the user of the path with v's notice,
// error or secret.
func (c *Console) showUser(r *request, status int, v view) error {
	if ok, err := c.allow(r, policy.PermUsersRead); !ok {
		return err
	}
	id := r.Param("id")
	u, err := c.d.Accounts.GetUserAs(r.ctx(), r.actor, id)
	if err != nil {
		return c.fail(r.Context, r, err)
	}
	d := userData{User: u, MayWrite: r.may(policy.PermUsersWrite), MayAssign: r.may(policy.PermRolesAssign),
		Machine: u.Kind == "machine", AuditHref: c.base() + Path + "/audit?target_id=" + url.QueryEscape(u.ID),
		SelfAction: c.base() + Path + "/users/" + url.PathEscape(u.ID)}
	for _, role := range c.d.Accounts.Roles() {
		d.Roles = append(d.Roles, role.Name)
	}
	sp, err := c.d.Accounts.UserSessionsAs(r.ctx(), r.actor, u.ID, r.QueryParam("sessions_cursor"), PageSize)
	if err != nil {
		d.SessionsError = errorText(err)
	}
	d.Sessions, d.SessionsNext = sp.Items, c.nextPage(r, "sessions_cursor", sp.NextCursor)
	if d.Machine {
		kp, err := c.d.Accounts.ListMachineAPIKeys(r.ctx(), r.actor, u.ID, r.QueryParam("keys_cursor"), PageSize)
		if err != nil {
			d.KeysError = errorText(err)
		}
		d.Keys, d.KeysNext = kp.Items, c.nextPage(r, "keys_cursor", kp.NextCursor)
	}
	v.Title, v.Screen, v.Data = "User "+displayName(u), "user", d
	return c.render(r, status, v)
}

func displayName(u accounts.User) string {
	if u.Email != "" {
		return u.Email
	}
	if u.Name != "" {
		return u.Name
	}
	return u.ID
}

// userActions are the forms of a user's page and the permission each
// needs (which of them need a recent sign-in: screens).
var userActions = map[string]struct {
	perm string
	run  func(c *Console, r *request, id string) (notice string, s *secret, err error)
}{
	"grant_role": {policy.PermRolesAssign, func(c *Console, r *request, id string) (string, *secret, error) {
		role := r.FormValue("role")
		_, err := c.d.Accounts.GrantRole(r.ctx(), r.actor, id, role)
		return "Granted the role " + role + ".", nil, err
	}},
	"revoke_role": {policy.PermRolesAssign, func(c *Console, r *request, id string) (string, *secret, error) {
		role := r.FormValue("role")
		_, err := c.d.Accounts.RevokeRole(r.ctx(), r.actor, id, role)
		return "Removed the role " + role + "; the user's sessions were ended.", nil, err
	}},
	"deactivate": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		off := false
		_, err := c.d.Accounts.UpdateUser(r.ctx(), r.actor, id, accounts.UserPatch{Active: &off})
		return "Deactivated; every session of the user was ended.", nil, err
	}},
	"activate": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		on := true
		_, err := c.d.Accounts.UpdateUser(r.ctx(), r.actor, id, accounts.UserPatch{Active: &on})
		return "Activated.", nil, err
	}},
	"temp_password": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		_, err := c.d.Accounts.SetTemporaryPassword(r.ctx(), r.actor, id, r.FormValue("password"))
		return "Set a temporary password; the user must change it at the next sign-in.", nil, err
	}},
	"reset_link": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		_, err := c.d.Accounts.RequestPasswordReset(r.ctx(), r.actor, id)
		return "Emailed a password reset link.", nil, err
	}},
	"revoke_sessions": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		err := c.d.Accounts.RevokeSessions(r.ctx(), r.actor, id)
		return "Ended every session of the user; their access tokens stopped working at once.", nil, err
	}},
	"end_session": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		err := c.d.Accounts.EndUserSession(r.ctx(), r.actor, id, r.FormValue("sid"))
		return "Ended the session; its access tokens stopped working at once.", nil, err
	}},
	"mfa_reset": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		err := c.d.Accounts.ResetMFA(r.ctx(), r.actor, id)
		return "Removed every second factor of the user and ended their sessions.", nil, err
	}},
	"clear_throttle": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		err := c.d.Accounts.ClearLoginThrottle(r.ctx(), r.actor, id)
		return "Cleared the failed logins; the user may sign in at once.", nil, err
	}},
	"create_api_key": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		k, err := c.d.Accounts.CreateMachineAPIKey(r.ctx(), r.actor, id, apikeys.CreateRequest{Name: r.FormValue("name"),
			Scopes: strings.Fields(r.FormValue("scopes"))})
		if err != nil {
			return "", nil, err
		}
		return "Created the API key " + k.Name + ".", &secret{Label: "API key", Value: k.Key,
			Note: "Copy it now: it is shown this once and cannot be shown again."}, nil
	}},
	"revoke_api_key": {policy.PermUsersWrite, func(c *Console, r *request, id string) (string, *secret, error) {
		err := c.d.Accounts.RevokeMachineAPIKey(r.ctx(), r.actor, id, r.FormValue("key_id"))
		return "Revoked the API key.", nil, err
	}},
}

func (c *Console) userAction(r *request) error {
	a, ok := userActions[r.FormValue("action")]
	if !ok {
		return c.showUser(r, http.StatusBadRequest, view{Error: "Unknown action."})
	}
	if ok, err := c.allow(r, a.perm); !ok {
		return err
	}
	id := r.Param("id")
	notice, s, err := a.run(c, r, id)
	if err != nil {
		if errorStatus(err) >= 500 {
			return c.fail(r.Context, r, err)
		}
		return c.showUser(r, errorStatus(err), view{Error: errorText(err)})
	}
	return c.showUser(r, http.StatusOK, view{Notice: notice, Secret: s})
}
