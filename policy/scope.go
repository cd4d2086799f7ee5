package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The OpenID Connect scopes Portcullis understands. They are not permissions: a client may always
// ask for them (for a user), and they never appear among ScopeGrant.Permissions.
const (
	ScopeOpenID        = "openid"
	ScopeProfile       = "profile"
	ScopeEmail         = "email"
	ScopeOfflineAccess = "offline_access"
)

// oidcScopes in the order a grant lists them.
var oidcScopes = []string{ScopeOpenID, ScopeProfile, ScopeEmail, ScopeOfflineAccess}

// Limits on a scope parameter, so a hostile request cannot make resolution expensive.
const (
	MaxScopeLength = 4096 // bytes of the whole scope parameter
	MaxScopeTokens = 256  // scope tokens in one request
)

// OIDCScopes returns the OpenID Connect scopes Portcullis understands (for scopes_supported).
func OIDCScopes() []string { return slices.Clone(oidcScopes) }

// IsOIDCScope reports whether s is one of OIDCScopes.
func IsOIDCScope(s string) bool { return slices.Contains(oidcScopes, s) }

// ErrInvalidScope is matched (errors.Is) by every *ScopeError; the server answers it with the OAuth
// error invalid_scope.
var ErrInvalidScope = errors.New("invalid_scope")

// ScopeError refuses a requested scope. Scope is the first offending scope token (empty when the
// problem is the parameter as a whole); Reason is a sentence for a person.
type ScopeError struct {
	Scope  string
	Reason string
}

// Error names the scope and the reason; suitable as error_description. A
// valid scope token is named in single quotes, which RFC 6749 §5.2 allows in
// error_description; one with characters outside NQCHAR is Go-quoted so
// that nothing it carries reaches a log or a page unescaped.
func (e *ScopeError) Error() string {
	if e.Scope == "" {
		return "invalid scope: " + e.Reason
	}
	if checkScopeToken(e.Scope) != nil {
		return fmt.Sprintf("scope %q: %s", e.Scope, e.Reason)
	}
	return fmt.Sprintf("scope '%s': %s", e.Scope, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidScope) true.
func (e *ScopeError) Is(target error) bool { return target == ErrInvalidScope }

// ScopeGrant is what a token receives: concrete permissions (sorted, never a wildcard) and OIDC
// scopes (in the order openid, profile, email, offline_access). Neither is ever nil.
type ScopeGrant struct {
	Permissions []string
	OIDC        []string
}

// Has reports whether the grant holds the OIDC scope or permission s.
func (g ScopeGrant) Has(s string) bool {
	return slices.Contains(g.OIDC, s) || slices.Contains(g.Permissions, s)
}

// Scopes returns the OIDC scopes followed by the permissions.
func (g ScopeGrant) Scopes() []string {
	return append(slices.Clone(g.OIDC), g.Permissions...)
}

// String returns Scopes joined by spaces, the form of the scope parameter (RFC 6749 §3.3).
func (g ScopeGrant) String() string { return strings.Join(g.Scopes(), " ") }

// ParseScope splits a scope parameter (RFC 6749 §3.3) into its tokens, in order and without
// duplicates. It is lenient about spaces (leading, trailing and repeated spaces are ignored) but
// every token must be made of NQCHAR (%x21 / %x23-5B / %x5D-7E): no control characters, tabs,
// quotes, backslashes or non-ASCII. An empty parameter gives an empty list.
func ParseScope(s string) ([]string, error) {
	if len(s) > MaxScopeLength {
		return nil, &ScopeError{Reason: fmt.Sprintf("the scope parameter is longer than %d bytes", MaxScopeLength)}
	}
	out := []string{}
	for tok := range strings.SplitSeq(s, " ") {
		if tok == "" || slices.Contains(out, tok) {
			continue
		}
		if err := checkScopeToken(tok); err != nil {
			return nil, err
		}
		if len(out) == MaxScopeTokens {
			return nil, &ScopeError{Reason: fmt.Sprintf("more than %d scopes requested", MaxScopeTokens)}
		}
		out = append(out, tok)
	}
	return out, nil
}

// checkScopeToken validates one scope-token = 1*NQCHAR.
func checkScopeToken(tok string) error {
	if tok == "" {
		return &ScopeError{Reason: "empty scope"}
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c < 0x21 || c == '"' || c == '\\' || c > 0x7e {
			return &ScopeError{Scope: tok, Reason: "a scope may contain only printable ASCII characters other than space, the double quote and the backslash"}
		}
	}
	return nil
}

// splitScopes validates requested scope tokens and separates OIDC scopes from permissions. Every
// token must be an OIDC scope or a concrete permission.
func splitScopes(requested []string) (oidc, perms []string, err error) {
	if len(requested) > MaxScopeTokens {
		return nil, nil, &ScopeError{Reason: fmt.Sprintf("more than %d scopes requested", MaxScopeTokens)}
	}
	for _, tok := range requested {
		if err := checkScopeToken(tok); err != nil {
			return nil, nil, err
		}
		switch {
		case IsOIDCScope(tok):
			if !slices.Contains(oidc, tok) {
				oidc = append(oidc, tok)
			}
		case ValidPermission(tok):
			if !slices.Contains(perms, tok) {
				perms = append(perms, tok)
			}
		case ValidPermissionPattern(tok):
			return nil, nil, &ScopeError{Scope: tok, Reason: "wildcards cannot be requested; name the permissions you need, or none to receive all of them"}
		default:
			return nil, nil, &ScopeError{Scope: tok, Reason: "unknown scope; scopes are openid, profile, email, offline_access or permissions of the form resource:action"}
		}
	}
	return canonicalOIDC(oidc), perms, nil
}

// canonicalOIDC orders OIDC scopes as oidcScopes does; never nil.
func canonicalOIDC(in []string) []string {
	out := []string{}
	for _, s := range oidcScopes {
		if slices.Contains(in, s) {
			out = append(out, s)
		}
	}
	return out
}

// clientAllows reports whether a client with clientScopes may receive perm; nil means every
// permission, and clientScopes may hold wildcard patterns.
func clientAllows(clientScopes []string, perm string) bool {
	return clientScopes == nil || Matches(clientScopes, perm)
}

// checkGrantable refuses perm unless the user holds it and the client may receive it. userPerms are
// concrete (Policy.Permissions): a wildcard there is not honoured, so a caller passing raw patterns
// fails closed.
func checkGrantable(perm string, userPerms, clientScopes []string) error {
	if !slices.Contains(userPerms, perm) {
		return &ScopeError{Scope: perm, Reason: "the user does not have this permission"}
	}
	if !clientAllows(clientScopes, perm) {
		return &ScopeError{Scope: perm, Reason: "this client may not receive this permission"}
	}
	return nil
}

// allGrantable returns every concrete permission of userPerms the client may receive.
func allGrantable(userPerms, clientScopes []string) []string {
	out := []string{}
	for _, p := range userPerms {
		if ValidPermission(p) && clientAllows(clientScopes, p) {
			out = append(out, p)
		}
	}
	return sortedSet(out)
}

// ResolveScope decides what a user's new token (password grant, invite acceptance, password change)
// receives. requested is the parsed scope parameter; userPerms the user's concrete permissions
// (Policy.Permissions); clientScopes the client's allowed scopes (nil: every permission; may hold
// wildcards). OIDC scopes are always granted as asked. When no permission is requested the grant
// holds every user permission the client may receive; otherwise exactly the requested permissions,
// each of which the user must hold and the client may receive, else a *ScopeError naming the first
// offender. Wildcards in requests are refused.
func ResolveScope(requested, userPerms, clientScopes []string) (ScopeGrant, error) {
	oidc, perms, err := splitScopes(requested)
	if err != nil {
		return ScopeGrant{}, err
	}
	if len(perms) == 0 {
		return ScopeGrant{Permissions: allGrantable(userPerms, clientScopes), OIDC: oidc}, nil
	}
	for _, p := range perms {
		if err := checkGrantable(p, userPerms, clientScopes); err != nil {
			return ScopeGrant{}, err
		}
	}
	return ScopeGrant{Permissions: sortedSet(perms), OIDC: oidc}, nil
}

// ResolveRestrictedScope is ResolveScope for a user who must change their password: the token
// carries no permission whatever was asked (requested permissions are dropped, not refused, so the
// login still succeeds), and no offline_access since no refresh token is issued. Malformed scope
// tokens are still refused.
func ResolveRestrictedScope(requested []string) (ScopeGrant, error) {
	oidc, _, err := splitScopes(requested)
	if err != nil {
		return ScopeGrant{}, err
	}
	oidc = slices.DeleteFunc(oidc, func(s string) bool { return s == ScopeOfflineAccess })
	return ScopeGrant{Permissions: []string{}, OIDC: oidc}, nil
}

// NarrowOnRefresh decides what the access token of a refresh receives (RFC 6749 §6: a refresh may
// narrow the scope, never widen it). sessionRequested is the scope the session was first asked with
// (kept with the refresh family; the refresh token's own scope never changes); requestedNow is the
// refresh request's scope parameter (empty: the session's scope); userPermsNow the user's
// permissions re-read now; clientScopes as for ResolveScope.
//
//   - OIDC scopes: those asked now, which must all have been asked by the session; the session's
//     when none is asked now.
//   - No permission asked now: a session that asked for none follows the user's current permissions
//     (a new role shows up, a removed one disappears); a session that asked for named permissions
//     gets those the user still holds and the client may receive — never more.
//   - Permissions asked now: each must have been asked by the session (when it named any), be held by
//     the user now and be allowed for the client; else a *ScopeError naming the first offender.
func NarrowOnRefresh(sessionRequested, requestedNow, userPermsNow, clientScopes []string) (ScopeGrant, error) {
	sessionOIDC, sessionPerms, err := splitScopes(sessionRequested)
	if err != nil {
		return ScopeGrant{}, err
	}
	oidc, perms := sessionOIDC, []string(nil)
	if len(requestedNow) > 0 {
		oidc, perms, err = splitScopes(requestedNow)
		if err != nil {
			return ScopeGrant{}, err
		}
		for _, s := range oidc {
			if !slices.Contains(sessionOIDC, s) {
				return ScopeGrant{}, widening(s)
			}
		}
	}
	if len(perms) == 0 {
		if len(sessionPerms) == 0 {
			return ScopeGrant{Permissions: allGrantable(userPermsNow, clientScopes), OIDC: oidc}, nil
		}
		kept := []string{}
		for _, p := range sessionPerms {
			if checkGrantable(p, userPermsNow, clientScopes) == nil {
				kept = append(kept, p)
			}
		}
		return ScopeGrant{Permissions: sortedSet(kept), OIDC: oidc}, nil
	}
	for _, p := range perms {
		if len(sessionPerms) > 0 && !slices.Contains(sessionPerms, p) {
			return ScopeGrant{}, widening(p)
		}
		if err := checkGrantable(p, userPermsNow, clientScopes); err != nil {
			return ScopeGrant{}, err
		}
	}
	return ScopeGrant{Permissions: sortedSet(perms), OIDC: oidc}, nil
}

// KeepToGranted narrows g, a refresh's grant from NarrowOnRefresh, to the
// permissions the session's login granted (granted: the family's scope),
// for a session that must not follow the user's new roles: a permission
// asked now (requestedNow) that the login did not grant is a *ScopeError,
// as any widening is; one the user gained since the login is left out.
func KeepToGranted(g ScopeGrant, requestedNow, granted []string) (ScopeGrant, error) {
	for _, p := range requestedNow {
		if !IsOIDCScope(p) && !slices.Contains(granted, p) {
			return ScopeGrant{}, widening(p)
		}
	}
	g.Permissions = slices.DeleteFunc(g.Permissions, func(p string) bool { return !slices.Contains(granted, p) })
	return g, nil
}

// widening is the error for a refresh that asks scope s, which its session
// was not granted.
func widening(s string) *ScopeError {
	return &ScopeError{Scope: s, Reason: "was not granted to this session; a refresh may narrow the scope, never widen it"}
}

// ResolveClientScope decides what a client_credentials token receives: only the client's own
// scopes (clientScopes as listed with --scopes; nil or empty: none), never OIDC scopes (there is no
// user). No permission requested: every concrete permission in clientScopes; otherwise exactly the
// requested permissions, each of which clientScopes must cover, else a *ScopeError. Store client
// scopes concrete (see Policy.Expand): a wildcard entry covers permissions requested by name but is
// never granted on its own, so a token never carries a wildcard.
func ResolveClientScope(requested, clientScopes []string) (ScopeGrant, error) {
	oidc, perms, err := splitScopes(requested)
	if err != nil {
		return ScopeGrant{}, err
	}
	if len(oidc) > 0 {
		return ScopeGrant{}, &ScopeError{Scope: oidc[0], Reason: "OpenID Connect scopes need a user and cannot be granted to a client acting for itself"}
	}
	if len(perms) == 0 {
		out := []string{}
		for _, s := range clientScopes {
			if ValidPermission(s) {
				out = append(out, s)
			}
		}
		return ScopeGrant{Permissions: sortedSet(out), OIDC: []string{}}, nil
	}
	for _, p := range perms {
		if !Matches(clientScopes, p) {
			return ScopeGrant{}, &ScopeError{Scope: p, Reason: "this client may not receive this permission"}
		}
	}
	return ScopeGrant{Permissions: sortedSet(perms), OIDC: []string{}}, nil
}

// Expand turns permission patterns ("*", "resource:*", concrete permissions) into the concrete
// permissions the policy knows, sorted; use it to store a client's --scopes without wildcards. A
// malformed pattern, or a concrete permission the policy does not know, is an error.
func (p *Policy) Expand(patterns []string) ([]string, error) {
	lists := make([][]string, 0, len(patterns))
	for _, pat := range patterns {
		if err := checkPermission(pat, true); err != nil {
			return nil, err
		}
		exp := expand(pat, p.known)
		if ValidPermission(pat) {
			if _, ok := slices.BinarySearch(p.known, pat); !ok {
				return nil, fmt.Errorf("permission %q is not known to the policy", pat)
			}
		} else if len(exp) == 0 {
			return nil, fmt.Errorf("%q matches no permission known to the policy", pat)
		}
		lists = append(lists, exp)
	}
	return sortedSet(lists...), nil
}
