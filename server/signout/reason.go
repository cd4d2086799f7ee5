package signout

import "github.com/portcullis-auth/portcullis/server/accounts"

// Reason says why a browser session ends and who ended it, for the audit
// event session.ended.
type Reason struct {
	// Why is the event's details.reason: "logout", "another_user",
	// "login", "self_service", "admin" (and browsersession.WhyCap,
	// "session_cap", for a session a sign-in ended past the user's cap,
	// which browsersession.Manager.Start records).
	Why string
	// ActorID is who ended it: the person, or an admin; "" for the session's
	// own user.
	ActorID string
	accounts.Meta
}

// Reasons a session ends.
const (
	WhyLogout      = "logout"       // RP-initiated logout (/oauth2/logout)
	WhyAnotherUser = "another_user" // a login as someone else in the same browser
	WhyLogin       = "login"        // a new login of the same person (its grants move to the new session)
	WhySelfService = "self_service" // DELETE /auth/sessions/{sid}, /account/sessions
	WhyAdmin       = "admin"        // DELETE /admin/users/{id}/sessions/{sid}
)
