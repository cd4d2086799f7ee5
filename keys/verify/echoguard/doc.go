// Package echoguard adapts a verify.Guard to Echo (github.com/labstack/echo/v4):
// the same RFC 6750 answers and requirements as the net/http middleware, with
// the verified claims in the request context (verify.ClaimsFromContext) and
// in the Echo context (Claims).
//
// It must never verify tokens or decide on requirements itself: every
// decision is verify.Guard.Check, so both adapters behave alike.
package echoguard
