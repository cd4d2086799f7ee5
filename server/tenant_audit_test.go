package server_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTenantSwitchAuditNamesNoOtherOrganisation: the audit of a switch by
// token exchange from acme into globex tells globex's admin nothing of
// acme (tenant.switched, stamped with globex), and acme's admin nothing of
// globex (tenant.switched_out, stamped with acme); the platform sees both,
// joined by the sid. Before the fix globex's event carried from_tenant
// "acme".
func TestTenantSwitchAuditNamesNoOtherOrganisation(t *testing.T) {
	for _, backend := range tenantBackends {
		t.Run(backend.String(), func(t *testing.T) {
			t.Parallel()
			e := newTenantEnv(t, backend)
			acme, globex := e.createTenant(t, "acme"), e.createTenant(t, "globex")
			e.member(t, acme, "both@example.com", "user")
			e.member(t, globex, "both@example.com", "user")
			e.member(t, acme, "admin-a@example.com", "admin")
			e.member(t, globex, "admin-g@example.com", "admin")
			sw := e.loginToSwitcher(t, "both@example.com", "acme")
			wantTenantToken(t, "switch acme to globex", e.exchange(t, sw.AccessToken, "globex").Token().AccessToken, "globex", "user")
			sid := decodeClaims(t, sw.AccessToken)["sid"]

			for _, tc := range []struct {
				name, bearer, action, tenantID, other string
			}{
				{"globex admin", e.loginTo(t, "admin-g@example.com", "globex").Token().AccessToken, "tenant.switched", globex, acme},
				{"acme admin", e.loginTo(t, "admin-a@example.com", "acme").Token().AccessToken, "tenant.switched_out", acme, globex},
			} {
				t.Run(tc.name, func(t *testing.T) {
					evs := auditEvents(t, e.acctEnv, tc.bearer, "action=tenant.switched")
					evs = append(evs, auditEvents(t, e.acctEnv, tc.bearer, "action=tenant.switched_out")...)
					if len(evs) != 1 || evs[0]["action"] != tc.action || evs[0]["tenant_id"] != tc.tenantID {
						t.Fatalf("events seen: %v, want one %s of %s", evs, tc.action, tc.tenantID)
					}
					if d, _ := evs[0]["details"].(map[string]any); d["sid"] != sid {
						t.Fatalf("details %v, want sid %v", d, sid)
					}
					raw, _ := json.Marshal(evs)
					otherSlug := map[string]string{acme: "acme", globex: "globex"}[tc.other]
					if strings.Contains(string(raw), tc.other) || strings.Contains(string(raw), otherSlug) {
						t.Fatalf("%s sees the other organisation: %s", tc.name, raw)
					}
				})
			}
			// The platform sees both.
			for _, action := range []string{"tenant.switched", "tenant.switched_out"} {
				if evs := auditEvents(t, e.acctEnv, e.rootTok, "action="+action); len(evs) != 1 {
					t.Fatalf("platform: %s events %v", action, evs)
				}
			}
		})
	}
}
