package pages

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/store"
)

// AccountSessionsPath is the page listing the signed-in person's browser
// sessions and remembered consents.
const AccountSessionsPath = "/account/sessions"

// Form fields of /account/sessions.
const (
	accountActionField = "action"
	actionEndSession   = "end_session"
	actionWithdraw     = "withdraw"
	sidField           = "sid"
	clientIDField      = "client_id"
)

// SessionViews is the account service's session and consent views
// (*accounts.Service): the same methods as GET/DELETE /auth/sessions and
// /auth/consents.
type SessionViews interface {
	OwnSessions(ctx context.Context, actor accounts.Actor, cursor string, limit int) (accounts.Page[accounts.BrowserSession], error)
	EndOwnSession(ctx context.Context, actor accounts.Actor, sid string) error
	OwnConsents(ctx context.Context, actor accounts.Actor, cursor string, limit int) (accounts.Page[accounts.Consent], error)
	WithdrawOwnConsent(ctx context.Context, actor accounts.Actor, clientID string) error
	ClientNames(ctx context.Context, ids []string) (map[string]string, error)
}

// accountListLimit is how many sessions and consents the page shows (the
// API's largest page).
const accountListLimit = 200

// accountView is what the sessions page shows.
type accountView struct {
	Sessions []sessionItem
	Consents []consentItem
}

// sessionItem is one browser session on the page.
type sessionItem struct {
	SID       string
	Title     string // "Firefox on Linux"
	Current   bool   // this browser
	Started   stamp
	LastUsed  stamp
	IP        string
	UserAgent string
	Apps      []string
}

// consentItem is one remembered consent on the page.
type consentItem struct {
	ClientID string
	App      string
	Scopes   []string
	Granted  stamp
}

// stamp is a time as the page shows it: machine-readable and for people.
type stamp struct{ ISO, Text string }

func stampOf(t time.Time) stamp {
	u := t.UTC()
	return stamp{ISO: u.Format(time.RFC3339), Text: u.Format("2 January 2006, 15:04 UTC")}
}

// accountSessions is GET /account/sessions: the person of the browser
// session cookie sees their sessions (this one marked) and consents, each
// with its button; without a session, "You are not signed in".
func (p *Pages) accountSessions(c echo.Context) error {
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	if bs == nil {
		return p.notSignedIn(c)
	}
	return p.renderAccount(c, bs)
}

// accountSessionsPost is POST /account/sessions: "Sign out" a session or
// "Withdraw" a consent, through the same service calls as DELETE
// /auth/sessions/{sid} and /auth/consents/{client_id}. Signing out this
// browser's session also clears its cookie.
func (p *Pages) accountSessionsPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, AccountSessionsPath)
	}
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	if bs == nil {
		return p.notSignedIn(c)
	}
	r := c.Request()
	ctx, actor := r.Context(), accounts.Actor{ID: bs.UserID, Meta: meta(c)}
	switch r.PostFormValue(accountActionField) {
	case actionEndSession:
		sid := r.PostFormValue(sidField)
		err = p.views().EndOwnSession(ctx, actor, sid)
		if err == nil && sid == bs.ID {
			c.SetCookie(browsersession.Clear(p.secure(c)))
			return p.render(c, http.StatusOK, view{Kind: "success", Heading: "You are signed out",
				Intro:   []string{"You have signed out on this device. Your other sessions are unchanged."},
				Primary: p.signIn("Go to the application")})
		}
	case actionWithdraw:
		err = p.views().WithdrawOwnConsent(ctx, actor, r.PostFormValue(clientIDField))
	default:
		return p.render(c, http.StatusBadRequest, view{Kind: "problem", Heading: "This could not be done",
			Intro:   []string{"The form did not say what to do. Open the page again and use its buttons."},
			Primary: &link{Href: p.base + AccountSessionsPath, Text: "Open your sessions again"}})
	}
	// Already ended or withdrawn (another tab, an admin): the list shows
	// what is left, the same as after success.
	if err != nil && apierr.From(err).Status != http.StatusNotFound {
		return p.fail(c, err)
	}
	return p.redirect(c, p.base+AccountSessionsPath)
}

// notSignedIn answers the sessions page without a browser session: a
// message, no form.
func (p *Pages) notSignedIn(c echo.Context) error {
	return p.notSignedInTo(c, "This page lists the devices where you are signed in and the applications you have allowed.")
}

// notSignedInTo answers an account page without a browser session; about
// says what the page is for.
func (p *Pages) notSignedInTo(c echo.Context, about string) error {
	return p.render(c, http.StatusOK, view{Kind: "problem", Heading: "You are not signed in",
		Intro: []string{about,
			"Sign in to an application first, then come back to this page in the same browser."},
		Primary: p.signIn("Go to the application")})
}

// renderAccount shows the sessions and consents of the person of bs.
func (p *Pages) renderAccount(c echo.Context, bs *store.BrowserSession) error {
	ctx, actor := c.Request().Context(), accounts.Actor{ID: bs.UserID, Meta: meta(c)}
	sessions, err := p.views().OwnSessions(ctx, actor, "", accountListLimit)
	if err != nil {
		return p.fail(c, err)
	}
	consents, err := p.views().OwnConsents(ctx, actor, "", accountListLimit)
	if err != nil {
		return p.fail(c, err)
	}
	var ids []string
	for _, s := range sessions.Items {
		ids = append(ids, s.ClientIDs...)
	}
	for _, cn := range consents.Items {
		ids = append(ids, cn.ClientID)
	}
	names, err := p.views().ClientNames(ctx, ids)
	if err != nil {
		return p.fail(c, err)
	}
	appName := func(id string) string {
		if n := names[id]; n != "" {
			return n
		}
		return id
	}
	var av accountView
	for _, s := range sessions.Items {
		it := sessionItem{SID: s.SID, Title: describeAgent(s.UserAgent), Current: s.SID == bs.ID,
			Started: stampOf(s.CreatedAt), LastUsed: stampOf(s.LastUsedAt), IP: s.IP, UserAgent: s.UserAgent}
		for _, id := range s.ClientIDs {
			it.Apps = append(it.Apps, appName(id))
		}
		if it.Current { // this device first
			av.Sessions = append([]sessionItem{it}, av.Sessions...)
		} else {
			av.Sessions = append(av.Sessions, it)
		}
	}
	for _, cn := range consents.Items {
		it := consentItem{ClientID: cn.ClientID, App: appName(cn.ClientID), Granted: stampOf(cn.GrantedAt)}
		for _, sc := range cn.Scopes {
			if t, ok := scopeText[sc]; ok {
				it.Scopes = append(it.Scopes, t)
			} else {
				it.Scopes = append(it.Scopes, "Use the permission "+sc)
			}
		}
		av.Consents = append(av.Consents, it)
	}
	v, err := p.formView(c, view{Heading: "Your sessions and applications", Account: &av}, AccountSessionsPath)
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	return p.render(c, http.StatusOK, v)
}

func (p *Pages) views() SessionViews { return p.si.Views }

// describeAgent names the browser and system of a User-Agent for people
// ("Firefox on Linux"); the full string is shown beside it.
func describeAgent(ua string) string {
	browser := "Unknown browser"
	for _, b := range []struct{ token, name string }{
		{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"}, {"Chrome/", "Chrome"},
		{"Chromium/", "Chromium"}, {"Safari/", "Safari"}, {"curl/", "curl"}, {"Go-http-client/", "A program"},
	} {
		if strings.Contains(ua, b.token) {
			browser = b.name
			break
		}
	}
	for _, s := range []struct{ token, name string }{
		{"iPhone", "iPhone"}, {"iPad", "iPad"}, {"Android", "Android"}, {"Windows", "Windows"},
		{"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	} {
		if strings.Contains(ua, s.token) {
			return browser + " on " + s.name
		}
	}
	return browser
}
