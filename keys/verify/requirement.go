package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Requirement is a condition on a verified access token, built with Scope,
// AnyScope, Role, AnyRole, MFA, Tenant, OwnTenant, Online, All and Any.
//
// The roles and permissions of a token of an organisation (one with a
// tenant claim) are that organisation's: Scope, AnyScope, Role and AnyRole
// count them only when the same guard also verifies the organisation for
// the request, with a Tenant (or OwnTenant) requirement that is met and
// must hold together with them (beside them in Require or All, written
// before or after them, or in an Any made only of such requirements).
// Elsewhere such a token is refused with 403, so an organisation's admin
// never passes a Role("admin") meant for the platform's. A platform token
// (no tenant claim) and an API key are judged on their claims alone.
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
	// tenantVerified: a Tenant or OwnTenant requirement that must hold
	// with the one being evaluated was met (see privilegeOutside).
	tenantVerified bool
}

// privilegeOutside is the one rule of a token of an organisation: its roles
// and permissions count only where the organisation was verified for this
// request. It returns nil for a platform token (no tenant claim), an API key
// (whose claims never name one) and a verified organisation, else the 403
// refusing what (a privilege requirement's description).
func (e *evaluation) privilegeOutside(what string) *Denial {
	if e.claims.Tenant == "" || e.tenantVerified {
		return nil
	}
	d := forbidden(nil, "This request needs "+what+" on the platform; a token of an organisation has its roles and permissions only within that organisation.")
	d.Err = fmt.Errorf("%w: a token of organisation %q on a route that verifies no organisation", ErrInsufficientScope, e.claims.Tenant)
	return d
}

// Scope is met by a token granting every one of perms. A token of an
// organisation meets it only beside a Tenant (or OwnTenant) requirement that
// is met (see Requirement).
func Scope(perms ...string) Requirement { return scopeReq{perms: perms, all: true} }

// AnyScope is met by a token granting at least one of perms; a token of an
// organisation only beside a Tenant (or OwnTenant) that is met, as Scope.
func AnyScope(perms ...string) Requirement { return scopeReq{perms: perms} }

// Role is met by a token carrying role or, given the Guard's RoleLevels, a
// role of an equal or higher level. An API key never meets it; a token of
// an organisation only beside a Tenant (or OwnTenant) requirement that is
// met, since its roles are held in that organisation, not on the platform
// (see Requirement).
func Role(role string) Requirement { return roleReq{roles: []string{role}} }

// AnyRole is met by a token meeting Role for at least one of roles (and so,
// for a token of an organisation, only beside a Tenant that is met).
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
// names it (the cross-tenant IDOR). Met, it lets the token's roles and
// permissions meet the Scope, AnyScope, Role and AnyRole requirements that
// must hold with it, in whatever order they are written; it is evaluated
// before them.
func Tenant(from func(*http.Request) string) Requirement { return tenantReq{from: from} }

// OwnTenant is met by every token. It declares a route that serves a token
// of an organisation within the organisation the token names, which the
// handler reads from Claims.Tenant (showing and changing nothing of another
// organisation's or of the platform's), so that the token's roles and
// permissions meet the Scope, AnyScope, Role and AnyRole beside it. A
// platform token and an API key are judged as without it. Never put it on a
// route of the whole platform (its metrics, its administration): there,
// without it, an organisation's token is refused.
func OwnTenant() Requirement { return ownTenantReq{} }

// All is met when every requirement is; they are checked in order and the
// first unmet one is reported (put Online last: it is the costly one),
// except that Tenant and OwnTenant requirements, those of nested Alls
// included, are checked before all the others.
func All(reqs ...Requirement) Requirement { return allReq(reqs) }

// Any is met when at least one requirement is. With none, it is never met.
// A Tenant that is one alternative verifies the organisation for itself
// alone, never for another alternative or for what sits beside the Any
// (unless every alternative is a Tenant or OwnTenant).
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
	if d := e.privilegeOutside(r.describe(nil)); d != nil {
		return d
	}
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
	if d := e.privilegeOutside(r.describe(e.g.opts.Roles)); d != nil {
		return d
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

// eval checks the organisation first: the requirements that judge only it
// (tenantOnly), those of nested Alls included, then the others in order, so
// a Tenant verifies the organisation for every privilege requirement that
// must hold with it, written before or after it. What it verified is
// forgotten on return: an alternative of an Any never lends it to another.
func (r allReq) eval(e *evaluation) *Denial {
	verified := e.tenantVerified
	d := r.evalTenant(e)
	if d == nil {
		d = r.evalRest(e)
	}
	e.tenantVerified = verified
	return d
}

// evalTenant evaluates the tenantOnly requirements of r and of the Alls in
// it; each one met verifies the organisation.
func (r allReq) evalTenant(e *evaluation) *Denial {
	for _, req := range r {
		if a, ok := req.(allReq); ok {
			if d := a.evalTenant(e); d != nil {
				return d
			}
			continue
		}
		if tenantOnly(req) {
			if d := req.eval(e); d != nil {
				return d
			}
			e.tenantVerified = true
		}
	}
	return nil
}

// evalRest evaluates, in order, the requirements of r and of the Alls in it
// that evalTenant left.
func (r allReq) evalRest(e *evaluation) *Denial {
	for _, req := range r {
		var d *Denial
		if a, ok := req.(allReq); ok {
			d = a.evalRest(e)
		} else if !tenantOnly(req) {
			d = req.eval(e)
		}
		if d != nil {
			return d
		}
	}
	return nil
}

// tenantOnly reports whether req judges nothing but the organisation of the
// request: Tenant, OwnTenant, or an Any or All made only of them.
func tenantOnly(req Requirement) bool {
	var list []Requirement
	switch r := req.(type) {
	case tenantReq, ownTenantReq:
		return true
	case allReq:
		list = r
	case anyReq:
		list = r
	}
	for _, sub := range list {
		if !tenantOnly(sub) {
			return false
		}
	}
	return len(list) > 0
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

type ownTenantReq struct{}

func (ownTenantReq) eval(*evaluation) *Denial { return nil }

func (ownTenantReq) describe(RoleLevels) string { return "any token, within its own organisation" }

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
