// Package authorize is the protocol core of browser sign-in, free of HTTP:
// it validates an authorization request (RFC 6749 §4.1.1, OIDC Core
// §3.1.2.1, RFC 7636, RFC 8252) in the order the contract fixes, decides
// what the request needs next (a code, the login, consent or
// change-password page, account selection, or a prompt=none error), builds
// authorization responses (303 redirect or form_post document, always with
// RFC 9207 iss), issues single-use authorization codes and keeps pending
// requests server-side so that several tabs can sign in at once.
//
// It must never import Echo or net/http handlers, log a code, a state or a
// nonce, or redirect before the client and its redirect URI are validated:
// when the request arrives (ParseRequest), and again when a request that
// waited (pending, pushed, expired) is answered (CheckRedirect).
// The HTTP handlers (server) call it; the token endpoint (server/token)
// redeems the codes it issues.
package authorize
