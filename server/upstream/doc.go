// Package upstream is sign-in through upstream OpenID Connect providers
// ("Sign in with Google", Entra ID, GitLab, any OpenID provider): the
// providers file (providers.go), id token verification with go-oidc
// (verify.go, over an HTTP client that bounds every answer of a provider
// and spaces its key set fetches: fetch.go), the one linking core that decides what a verified upstream
// identity may do here (decide.go) and the operations that apply its
// decision (apply.go), the browser path's start and callback (browser.go)
// and the RFC 8693 token-exchange handler for upstream id tokens
// (exchange.go).
//
// Linking follows the contract's "Upstream identity providers": a user is
// found by (provider, sub) and never by email; an unknown sub is linked to
// a local account only after that person proves it, or automatically under
// every condition of verified_email_auto (never to an account holding an
// identity of a provider that does not vouch for its email: Providers.
// VouchesFor, which a password reset also applies, unlinking such
// identities); a local account whose email is unverified is never linked; just-in-time creation is off unless the
// provider turns it on, and the account it creates has a verified email
// only when the provider is authoritative for the email's domain
// (Provider.VouchesForEmail: the domain is in its allowed_domains).
//
// The browser path (GET /login/{provider} and its callback) uses it so:
//
//   - start: Service.Begin(ctx, providerID, callbackURL, fresh, ret) stores state,
//     nonce and PKCE verifier (and ret, e.g. the pending authorization
//     request, or an accounts.InviteRef: never an invite token, which is
//     stored only hashed) in the single-use store and returns the
//     provider's authorization URL (404 for an unknown provider), passing
//     on the request's prompt=login and max_age (fresh);
//   - callback: Service.Callback(ctx, providerID, query, meta) takes the
//     state once and verifies everything, returning Verified (provider,
//     claims, ret) or an audited *Refusal; then Service.SignIn (or
//     Service.AcceptInvite with the InviteRef) decides and applies:
//     a user to start the session for (amr AMR(provider, claims)), or
//     ErrNeedsConfirmation with the Decision naming the local account;
//   - confirm: after the person proves that account (passcheck, and the
//     second factor when enrolled), Service.LinkConfirmed re-decides and
//     links. Each of these audits its own refusals (login.failed,
//     details.method upstream); RecordRefusal is there for the caller's
//     own (an unknown provider at the callback's route, say).
//
// It must never log or return a client secret, an upstream token or an
// authorization code, and it never decides anything from an unverified
// token.
package upstream
