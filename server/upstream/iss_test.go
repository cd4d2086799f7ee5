package upstream_test

import (
	"context"
	"errors"
	"testing"

	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestCallbackIssParameter: RFC 9207 §2.4. A provider whose discovery
// document advertises authorization_response_iss_parameter_supported sends
// iss on every authorization response, so a callback without it was not
// made by that provider and is refused (invalid_state, as an iss of another
// issuer is). A provider that does not advertise it may leave iss out.
func TestCallbackIssParameter(t *testing.T) {
	const flag = "authorization_response_iss_parameter_supported"
	tests := []struct {
		name      string
		discovery map[string]any // extra discovery fields
		iss       func(op *upstreamtest.Provider) (string, bool)
		refused   bool
	}{
		{name: "fail/advertised_and_missing", discovery: map[string]any{flag: true},
			iss: func(*upstreamtest.Provider) (string, bool) { return "", false }, refused: true},
		{name: "fail/advertised_and_empty", discovery: map[string]any{flag: true},
			iss: func(*upstreamtest.Provider) (string, bool) { return "", true }, refused: true},
		{name: "fail/advertised_and_of_another_issuer", discovery: map[string]any{flag: true},
			iss: func(*upstreamtest.Provider) (string, bool) { return "https://evil.example", true }, refused: true},
		{name: "fail/not_advertised_and_of_another_issuer",
			iss: func(*upstreamtest.Provider) (string, bool) { return "https://evil.example", true }, refused: true},
		{name: "ok/advertised_and_sent", discovery: map[string]any{flag: true},
			iss: func(op *upstreamtest.Provider) (string, bool) { return op.Issuer, true }},
		{name: "ok/not_advertised_and_missing",
			iss: func(*upstreamtest.Provider) (string, bool) { return "", false }},
		{name: "ok/advertised_false_and_missing", discovery: map[string]any{flag: false},
			iss: func(*upstreamtest.Provider) (string, bool) { return "", false }},
		{name: "ok/malformed_flag_is_not_advertised", discovery: map[string]any{flag: "yes"},
			iss: func(*upstreamtest.Provider) (string, bool) { return "", false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := upstreamtest.New(t)
			op.SetDiscovery(tt.discovery)
			ps, err := upstream.NewProviders(&upstream.Provider{ID: "test", Name: "Test", Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: secretOf(t, op)})
			if err != nil {
				t.Fatal(err)
			}
			ann := store.User{ID: "usr_ann", Email: "ann@example.com", Active: true, EmailVerified: true}
			st := &memStore{directory{users: []store.User{ann}}}
			audit := &auditLog{}
			svc, err := upstream.New(upstream.Deps{Providers: ps, Verifier: upstream.NewVerifier(nil, nil), Store: st, Accounts: noAccounts{},
				Audit: audit, Once: &memOnce{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			op.NextLogin(upstreamtest.Token{Subject: "s-ann", Email: "ann@example.com", EmailVerified: upstreamtest.Bool(true)})
			u, err := svc.Begin(ctx, "test", "http://127.0.0.1:1/login/test/callback", upstream.Freshness{}, nil)
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			q := browse(t, u)
			if q.Get("iss") != op.Issuer {
				t.Fatalf("the test provider sent iss %q", q.Get("iss"))
			}
			if iss, sent := tt.iss(op); sent {
				q.Set("iss", iss)
			} else {
				q.Del("iss")
			}
			v, err := svc.Callback(ctx, "test", q, upstream.Meta{IP: "192.0.2.1", ClientID: "portcullis"})
			if !tt.refused {
				if err != nil || v.Claims.Subject != "s-ann" {
					t.Fatalf("Callback = %+v, %v; want the sign-in", v.Claims, err)
				}
				return
			}
			var r *upstream.Refusal
			if !errors.As(err, &r) || r.Reason != upstream.ReasonInvalidState {
				t.Fatalf("Callback = %v, want refusal %s", err, upstream.ReasonInvalidState)
			}
			if e := audit.last(); e.Action != "login.failed" || e.Details["reason"] != upstream.ReasonInvalidState {
				t.Fatalf("audit = %+v, want login.failed %s", e, upstream.ReasonInvalidState)
			}
		})
	}
}
