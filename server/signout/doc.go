// Package signout ends browser (SSO) sessions: the one routine that logout,
// the session views (self-service and admin) and a login as another user
// all call. Ending a session ends its record, revokes the refresh families
// of its grants that lack offline_access (their access tokens follow, on
// every instance), queues OIDC back-channel logout tokens for the clients
// that registered a back-channel logout URI, and records session.ended.
// Ending every session of a user (Ender.EndUser, which the accounts service
// reaches through its sessions dependency) queues the same back-channel
// logout for each of the user's live browser sessions, then writes the
// user's cut-off. The grants a live session drops to stay within
// store.MaxSessionGrants are ended the same way at the drop (EndDropped),
// since the session's end can no longer name them; so are the grants of
// the sessions a sign-in ends to keep its user within the cap on sessions
// per user (browsersession.Manager.Start hands them to EndDropped).
//
// DecideLogout applies the contract's RP-initiated logout rules; Hold and
// TakeHeld keep a logout request POSTed to the end_session_endpoint (which
// comes without the SameSite=Lax session cookie) until the browser's
// same-site GET, so it is decided with the session it ends.
package signout
