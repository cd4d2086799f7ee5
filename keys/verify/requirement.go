package verify

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// Requirement is a condition on a verified access token, built with Scope,
// AnyScope, Role, AnyRole, MFA, Online, All and Any.
type Requirement interface {
	// eval returns nil when the requirement is met, else the denial.
	eval(e *evaluation) *Denial
	// describe says in words what meets the requirement.
	describe(levels RoleLevels) string
}

// evaluation is one request being checked.
type evaluation struct {
	ctx    context.Context
	r      *http.Request
	g      *Guard
	claims *Claims
	token  string
	// apiKey: token is an API key, just confirmed by introspection.
	apiKey bool
}

// Scope is met by a token granting every one of perms.
func Scope(perms ...string) Requirement { return scopeReq{perms: perms, all: true} }

// AnyScope is met by a token granting at least one of perms.
func AnyScope(perms ...string) Requirement { return scopeReq{perms: perms} }

// Role is met by a token carrying role or, given the Guard's RoleLevels, a
// role of an equal or higher level. An API key never meets it.
func Role(role string) Requirement { return roleReq{roles: []string{role}} }

// AnyRole is met by a token meeting Role for at least one of roles.
func AnyRole(roles ...string) Requirement { return roleReq{roles: roles} }

// MFA is met by a token whose user signed in with a second factor (acr
// "mfa", amr naming "mfa"). Any other token is refused with 401
// insufficient_user_authentication and acr_values="mfa" (RFC 9470 §3): the
// client should sign the user in again with a second factor. An API key
// never meets it.
func MFA() Requirement { return mfaReq{} }

// Tenant is met by a token whose `tenant` claim (the organisation it acts
// in) equals, byte for byte, the value from takes from the request (a path
// segment, say). A token without the claim, an API key, an empty or
// different value, and a from that is nil are refused with 403, so a
// tenant's token never reaches another tenant's data through a route that
// names it (the cross-tenant IDOR).
func Tenant(from func(*http.Request) string) Requirement { return tenantReq{from: from} }

// All is met when every requirement is; they are checked in order and the
// first unmet one is reported (put Online last: it is the costly one).
func All(reqs ...Requirement) Requirement { return allReq(reqs) }

// Any is met when at least one requirement is. With none, it is never met.
func Any(reqs ...Requirement) Requirement { return anyReq(reqs) }

// Online is met when the issuer's introspection endpoint says the token is
// still active (see Introspector), so a revoked token is refused at once.
// When the endpoint cannot be asked, the request is refused with 503. An
// API key meets it: it is accepted only on the issuer's word.
func Online() Requirement { return onlineReq{} }

type scopeReq struct {
	perms []string
	all   bool
}

func (r scopeReq) eval(e *evaluation) *Denial {
	met := r.all
	for _, p := range r.perms {
		has := e.claims.HasScope(p)
		if r.all && !has {
			met = false
			break
		}
		if !r.all && has {
			met = true
			break
		}
	}
	if met {
		return nil
	}
	return forbidden(r.perms, "This request needs "+r.describe(nil)+".")
}

func (r scopeReq) describe(RoleLevels) string {
	switch {
	case len(r.perms) == 1:
		return "the permission " + r.perms[0]
	case r.all:
		return "the permissions " + strings.Join(r.perms, ", ")
	default:
		return "one of the permissions " + strings.Join(r.perms, ", ")
	}
}

type roleReq struct{ roles []string }

func (r roleReq) eval(e *evaluation) *Denial {
	if e.apiKey {
		// Never met by a key, whatever its claims say.
		return forbidden(nil, "This request needs "+r.describe(e.g.opts.Roles)+"; an API key carries no roles.")
	}
	for _, role := range r.roles {
		if e.g.opts.Roles.AtLeast(e.claims.Roles, role) {
			return nil
		}
	}
	return forbidden(nil, "This request needs "+r.describe(e.g.opts.Roles)+".")
}

func (r roleReq) describe(levels RoleLevels) string {
	parts := make([]string, len(r.roles))
	for i, role := range r.roles {
		parts[i] = role
		if _, ok := levels[role]; ok {
			parts[i] += " or higher"
		}
	}
	if len(parts) == 1 {
		return "the role " + parts[0]
	}
	return "one of the roles " + strings.Join(parts, ", ")
}

type allReq []Requirement

func (r allReq) eval(e *evaluation) *Denial {
	for _, req := range r {
		if d := req.eval(e); d != nil {
			return d
		}
	}
	return nil
}

func (r allReq) describe(l RoleLevels) string { return joinDescriptions(r, l, " and ") }

type anyReq []Requirement

// eval returns nil at the first requirement met. When none is, a 401 or 503
// from one of them wins (it is not the token's permissions that failed);
// otherwise the 403 lists every alternative's scopes. An unmet MFA is like
// a missing permission: the other alternatives are still tried, and it is
// answered only when no alternative was a 403.
func (r anyReq) eval(e *evaluation) *Denial {
	var (
		first, mfa *Denial
		scopes     []string
	)
	for _, req := range r {
		d := req.eval(e)
		if d == nil {
			return nil
		}
		if d.Code == codeInsufficientUserAuthentication {
			if mfa == nil {
				mfa = d
			}
			continue
		}
		if d.Status != http.StatusForbidden {
			return d
		}
		if first == nil {
			first = d
		}
		if d.Scope != "" {
			scopes = append(scopes, strings.Fields(d.Scope)...)
		}
	}
	if first == nil && mfa != nil {
		return mfa
	}
	if len(r) == 1 {
		return first
	}
	return forbidden(dedupe(scopes), "This request needs "+r.describe(e.g.opts.Roles)+".")
}

func (r anyReq) describe(l RoleLevels) string {
	if len(r) == 0 {
		return "a requirement that cannot be met"
	}
	return "either " + joinDescriptions(r, l, ", or ")
}

type tenantReq struct{ from func(*http.Request) string }

func (r tenantReq) eval(e *evaluation) *Denial {
	if e.claims.Tenant == "" {
		return forbidden(nil, "This request needs a token of the organisation it names; this token belongs to none.")
	}
	if r.from == nil || e.r == nil {
		return forbidden(nil, "This request names no organisation.")
	}
	want := r.from(e.r)
	if want == "" || want != e.claims.Tenant {
		return forbidden(nil, "This request needs a token of the organisation it names.")
	}
	return nil
}

func (tenantReq) describe(RoleLevels) string { return "a token of the organisation the request names" }

// codeInsufficientUserAuthentication is RFC 9470's error code.
const codeInsufficientUserAuthentication = "insufficient_user_authentication"

type mfaReq struct{}

func (mfaReq) eval(e *evaluation) *Denial {
	if e.claims.HasMFA() {
		return nil
	}
	return &Denial{Status: http.StatusUnauthorized, Code: codeInsufficientUserAuthentication,
		Description: "This request needs a sign-in with a second factor (multi-factor authentication).",
		ACRValues:   "mfa", Err: ErrInsufficientUserAuthentication}
}

func (mfaReq) describe(RoleLevels) string { return "a sign-in with a second factor" }

type onlineReq struct{}

func (onlineReq) eval(e *evaluation) *Denial {
	if e.apiKey {
		// An API key is only ever accepted on the issuer's word, at most
		// MaxAPIKeyCacheTTL old: that is the online check.
		return nil
	}
	in := e.g.opts.Introspector
	if in == nil {
		return unavailable("The access token cannot be checked right now; try again shortly.",
			errors.New("an Online requirement needs GuardOptions.Introspector"))
	}
	active, err := in.Active(e.ctx, e.token)
	switch {
	case err != nil:
		return unavailable("The access token cannot be checked right now; try again shortly.", err)
	case !active:
		return verifyDenial(ErrInactive)
	}
	return nil
}

func (onlineReq) describe(RoleLevels) string { return "a token the issuer confirms as active" }

func forbidden(scopes []string, desc string) *Denial {
	return &Denial{Status: http.StatusForbidden, Code: "insufficient_scope", Description: desc,
		Scope: strings.Join(scopes, " "), Err: ErrInsufficientScope}
}

func joinDescriptions(reqs []Requirement, l RoleLevels, sep string) string {
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = r.describe(l)
	}
	return strings.Join(parts, sep)
}

func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
