package upstream

import (
	"slices"

	"github.com/portcullis-auth/portcullis/server/mfa"
)

// AMRFederated is the RFC 8176 method of a sign-in at an upstream identity
// provider.
const AMRFederated = "fed"

// upstreamMethods are the provider's amr values that may be carried over
// with trust_mfa: second factors and MFA itself (never "pwd": a password
// given upstream is not this server's password).
var upstreamMethods = []string{mfa.AMROTP, mfa.AMRHardwareKey, mfa.AMRUserPresence, mfa.AMRMFA}

// AMR is the amr of a sign-in through p with claims c: ["fed"], plus the
// provider's own second-factor methods and "mfa" (last) only when the
// provider is trusted for MFA (trust_mfa) and its token says so.
func AMR(p *Provider, c Claims) []string {
	out := []string{AMRFederated}
	if p == nil || !p.TrustMFA || !slices.Contains(c.AMR, mfa.AMRMFA) {
		return out
	}
	for _, m := range upstreamMethods {
		if m != mfa.AMRMFA && slices.Contains(c.AMR, m) {
			out = append(out, m)
		}
	}
	return append(out, mfa.AMRMFA)
}
