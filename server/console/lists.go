package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/store"
)

type invitesData struct {
	Invites []accounts.Invite
	Next    string
	Roles   []string
	Email   string
}

func (c *Console) invites(r *request) error { return c.showInvites(r, http.StatusOK, view{}) }

func (c *Console) showInvites(r *request, status int, v view) error {
	if ok, err := c.allow(r, policy.PermUsersInvite); !ok {
		return err
	}
	d := invitesData{}
	for _, role := range c.d.Accounts.Roles() {
		d.Roles = append(d.Roles, role.Name)
	}
	page, err := c.d.Accounts.ListInvitesAs(r.ctx(), r.actor, r.QueryParam("cursor"), PageSize)
	if err != nil {
		return c.fail(r.Context, r, err)
	}
	d.Invites, d.Next = page.Items, c.nextPage(r, "cursor", page.NextCursor)
	if v.Error != "" {
		d.Email = r.FormValue("email")
	}
	v.Title, v.Screen, v.Data = "Invites", "invites", d
	return c.render(r, status, v)
}

func (c *Console) inviteAction(r *request) error {
	if ok, err := c.allow(r, policy.PermUsersInvite); !ok {
		return err
	}
	var notice string
	var err error
	switch r.FormValue("action") {
	case "create":
		var inv accounts.Invite
		inv, err = c.d.Accounts.CreateInvite(r.ctx(), r.actor, r.FormValue("email"), r.FormValue("role"))
		notice = "Invited " + inv.Email + " as " + inv.Role + "; the link was emailed."
	case "revoke":
		_, err = c.d.Accounts.RevokeInvite(r.ctx(), r.actor, r.FormValue("id"))
		notice = "Revoked the invite."
	default:
		return c.showInvites(r, http.StatusBadRequest, view{Error: "Unknown action."})
	}
	if err != nil {
		if errorStatus(err) >= 500 {
			return c.fail(r.Context, r, err)
		}
		return c.showInvites(r, errorStatus(err), view{Error: errorText(err)})
	}
	return c.showInvites(r, http.StatusOK, view{Notice: notice})
}

type sessionsData struct {
	Find     string
	User     *accounts.User
	Sessions []accounts.BrowserSession
	Next     string
	MayWrite bool
}

func (c *Console) sessionsScreen(r *request) error { return c.showSessions(r, http.StatusOK, view{}) }

// showSessions lists the sessions of the user named by ?user= (an email
// address or an id).
func (c *Console) showSessions(r *request, status int, v view) error {
	if ok, err := c.allow(r, policy.PermUsersRead); !ok {
		return err
	}
	d := sessionsData{Find: strings.TrimSpace(r.QueryParam("user")), MayWrite: r.may(policy.PermUsersWrite)}
	if d.Find == "" {
		d.Find = r.FormValue("user_id")
	}
	v.Title, v.Screen = "Sessions", "sessions"
	if d.Find != "" {
		u, err := c.findUser(r, d.Find)
		if err != nil {
			v.Data = d
			return c.refused(r, 0, v, err)
		}
		d.User = &u
		page, err := c.d.Accounts.UserSessionsAs(r.ctx(), r.actor, u.ID, r.QueryParam("cursor"), PageSize)
		if err != nil {
			return c.fail(r.Context, r, err)
		}
		d.Sessions, d.Next = page.Items, c.nextPage(r, "cursor", page.NextCursor)
	}
	v.Data = d
	return c.render(r, status, v)
}

// findUser finds a user by email address, else by id.
func (c *Console) findUser(r *request, s string) (accounts.User, error) {
	if strings.Contains(s, "@") {
		page, err := c.d.Accounts.ListUsersAs(r.ctx(), r.actor, accounts.UserQuery{Email: s, Limit: 1})
		if err != nil {
			return accounts.User{}, err
		}
		if len(page.Items) == 1 {
			return page.Items[0], nil
		}
	}
	return c.d.Accounts.GetUserAs(r.ctx(), r.actor, s)
}

func (c *Console) sessionAction(r *request) error {
	if ok, err := c.allow(r, policy.PermUsersWrite); !ok {
		return err
	}
	id := r.FormValue("user_id")
	var notice string
	var err error
	switch r.FormValue("action") {
	case "end":
		err = c.d.Accounts.EndUserSession(r.ctx(), r.actor, id, r.FormValue("sid"))
		notice = "Ended the session; its refresh and access tokens stopped working at once."
	case "end_all":
		err = c.d.Accounts.RevokeSessions(r.ctx(), r.actor, id)
		notice = "Ended every session of the user; their access tokens stopped working at once."
	default:
		return c.showSessions(r, http.StatusBadRequest, view{Error: "Unknown action."})
	}
	if err != nil {
		if errorStatus(err) >= 500 {
			return c.fail(r.Context, r, err)
		}
		return c.showSessions(r, errorStatus(err), view{Error: errorText(err)})
	}
	return c.showSessions(r, http.StatusOK, view{Notice: notice})
}

type auditData struct {
	Action, ActorID, TargetID, Since, Until string
	Events                                  []store.AuditEvent
	Next                                    string
}

// auditTime is the layout of the since and until fields (a datetime-local
// input, read as UTC).
const auditTime = "2006-01-02T15:04"

func (c *Console) audit(r *request) error {
	if ok, err := c.allow(r, policy.PermAuditRead); !ok {
		return err
	}
	d := auditData{Action: strings.TrimSpace(r.QueryParam("action")), ActorID: strings.TrimSpace(r.QueryParam("actor_id")),
		TargetID: strings.TrimSpace(r.QueryParam("target_id")), Since: r.QueryParam("since"), Until: r.QueryParam("until")}
	v := view{Title: "Audit", Screen: "audit", Data: d}
	q := accounts.AuditQuery{Action: d.Action, ActorID: d.ActorID, TargetID: d.TargetID, Cursor: r.QueryParam("cursor"), Limit: PageSize}
	for _, f := range []struct {
		name, raw string
		dst       *time.Time
	}{{"since", d.Since, &q.Since}, {"until", d.Until, &q.Until}} {
		if f.raw == "" {
			continue
		}
		t, err := time.Parse(auditTime, f.raw)
		if err != nil {
			v.Error = "Give " + f.name + " as a date and time, such as 2026-05-01T12:00 (UTC)."
			return c.render(r, http.StatusBadRequest, v)
		}
		*f.dst = t.UTC()
	}
	page, err := c.d.Accounts.ListAuditAs(r.ctx(), r.actor, q)
	if err != nil {
		return c.refused(r, 0, v, err)
	}
	d.Events, d.Next = page.Items, c.nextPage(r, "cursor", page.NextCursor)
	v.Data = d
	return c.render(r, http.StatusOK, v)
}
