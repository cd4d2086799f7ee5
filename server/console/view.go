package console

import (
	"html/template"
	"strings"
	"time"
)

// view is what the layout shows: a screen (Screen names its template, Data
// its content) or, without one, a message.
type view struct {
	Product, StyleURL, Base string
	CSRF, CSRFField         string
	Title                   string
	Screen                  string
	// Kind colours a message page: error or success.
	Kind    string
	Message string
	// Notice is a success on a screen; Error a refusal (role=alert).
	Notice string
	Error  string
	// Secret is shown this once (a client secret, an API key).
	Secret   *secret
	Primary  *link
	Nav      []navLink
	SignedIn bool
	Data     any
}

type secret struct{ Label, Value, Note string }

type link struct{ Href, Text string }

type navLink struct {
	Href, Text string
	Current    bool
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		}
		return "—"
	},
	// scopes describes a client's scopes: nil is every permission.
	"scopes": func(l []string) string {
		switch {
		case l == nil:
			return "every permission"
		case len(l) == 0:
			return "none"
		}
		return strings.Join(l, ", ")
	},
	"join": func(l []string) string {
		if len(l) == 0 {
			return "—"
		}
		return strings.Join(l, ", ")
	},
}

// sessionRows is what the session table needs: the rows, the user, the
// form's target and action, and the view (for the CSRF field).
type sessionRowsData struct {
	View      view
	UserID    string
	Sessions  any
	MayWrite  bool
	Action    string
	EndAction string
}

func init() {
	funcs["sessionRows"] = func(v view, userID string, sessions any, mayWrite bool) sessionRowsData {
		d := sessionRowsData{View: v, UserID: userID, Sessions: sessions, MayWrite: mayWrite,
			Action: v.Base + Path + "/sessions", EndAction: "end"}
		if v.Screen == "user" {
			d.Action, d.EndAction = v.Base+Path+"/users/"+userID, "end_session"
		}
		return d
	}
}
