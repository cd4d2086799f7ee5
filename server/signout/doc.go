// Package signout ends browser (SSO) sessions: the one routine that logout,
// the session views (self-service and admin) and a login as another user
// all call. Ending a session ends its record, revokes the refresh families
// of its grants that lack offline_access (their access tokens follow, on
// every instance), queues OIDC back-channel logout tokens for the clients
// that registered a back-channel logout URI, and records session.ended.
package signout
