package upstream_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
)

func noRedirectClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// secretOf builds the provider's client secret the way the providers file
// does (Secret has no exported constructor).
func secretOf(t *testing.T, op *upstreamtest.Provider) upstream.Secret {
	t.Helper()
	ps, err := upstream.Parse("t.yaml", []byte("providers:\n"+op.ProviderYAML("x")), policy.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := ps.Get("x")
	if !strings.HasPrefix(p.ClientSecret.Reveal(), "upstream-client-secret-") {
		t.Fatal("secret not read")
	}
	return p.ClientSecret
}
