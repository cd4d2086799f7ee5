package token

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// wantSecondFactorOwed fails unless err is the 400 invalid_grant of
// secondFactorOwed.
func wantSecondFactorOwed(t *testing.T, what string, err error) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != "invalid_grant" || ae.Status != 400 || !strings.Contains(ae.Description, "second factor") {
		t.Fatalf("%s: %v, want 400 invalid_grant saying a second factor is required", what, err)
	}
}

// liveFamilies counts the families of user that are not revoked.
func (e *mfaEnv) liveFamilies(user string) int {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	n := 0
	for _, r := range e.state.fams {
		if r.fam.UserID == user && !r.revoked {
			n++
		}
	}
	return n
}

// TestIssuanceOwesSecondFactor: with the policy requiring a second factor
// of "editor", no issuance hands an editor tokens from a login without
// "mfa" in its amr, and none creates a family first; a login with it
// issues, and refreshes, as before.
func TestIssuanceOwesSecondFactor(t *testing.T) {
	refresh := func(rt string) map[string]string {
		return map[string]string{"grant_type": GrantRefreshToken, "refresh_token": rt}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, e *mfaEnv)
	}{
		{"fail/refresh_after_gaining_the_role", func(t *testing.T, e *mfaEnv) {
			resp, err := e.token(t, "app", map[string]string{"grant_type": GrantPassword, "username": "u3", "password": "pw"})
			if err != nil {
				t.Fatal(err)
			}
			u := e.dir.users["u3"]
			u.Roles = []string{"editor"}
			e.dir.users["u3"] = u
			_, err = e.token(t, "app", refresh(resp.RefreshToken))
			wantSecondFactorOwed(t, "refresh", err)
			if n := e.liveFamilies("u3"); n != 0 {
				t.Fatalf("%d live families after the refused refresh, want the session ended", n)
			}
			// The presented token is now an ended session's, not reuse: no
			// theft alarm.
			_, err = e.token(t, "app", refresh(resp.RefreshToken))
			wantOAuthError(t, err, "invalid_grant")
			if a := e.audit.actions(); slices.Contains(a, "token.refresh_reuse_detected") || !slices.Contains(a, "token.revoked") {
				t.Fatalf("audit %v, want token.revoked and no reuse detected", a)
			}
		}},
		{"ok/refresh_of_a_login_with_the_second_factor", func(t *testing.T, e *mfaEnv) {
			tok := e.challenge(t, "app", "u1", "openid")
			resp, err := e.token(t, "app", map[string]string{"grant_type": GrantMFAOTP, "mfa_token": tok, "otp": "123456"})
			if err != nil {
				t.Fatal(err)
			}
			next, err := e.token(t, "app", refresh(resp.RefreshToken))
			if err != nil {
				t.Fatalf("refresh of an mfa login: %v", err)
			}
			wantAMR(t, "refreshed", claimsOf(t, next.AccessToken), []string{"pwd", "otp", "mfa"}, "mfa")
		}},
		{"fail/code_of_a_password_login", func(t *testing.T, e *mfaEnv) {
			code, _ := e.putCode(t, nil) // u1, an editor, amr [pwd]
			_, err := e.exchange(codeRequest("web", code))
			wantSecondFactorOwed(t, "code", err)
			if n := e.liveFamilies("u1"); n != 0 {
				t.Fatalf("%d families left by a refused code", n)
			}
		}},
		{"ok/code_of_a_login_with_the_second_factor", func(t *testing.T, e *mfaEnv) {
			code, _ := e.putCode(t, func(c *AuthCode) { c.AMR = []string{"pwd", "otp", "mfa"} })
			resp, err := e.exchange(codeRequest("web", code))
			if err != nil {
				t.Fatal(err)
			}
			wantAMR(t, "code", claimsOf(t, resp.AccessToken), []string{"pwd", "otp", "mfa"}, "mfa")
		}},
		{"fail/issue_for_user", func(t *testing.T, e *mfaEnv) {
			_, err := e.svc.IssueForUser(context.Background(), e.dir.clients["app"], e.dir.users["u1"], "", nil)
			wantSecondFactorOwed(t, "IssueForUser", err)
			if n := e.liveFamilies("u1"); n != 0 {
				t.Fatalf("%d families left by a refused issuance", n)
			}
		}},
		{"ok/issue_for_user_below_the_level", func(t *testing.T, e *mfaEnv) {
			if _, err := e.svc.IssueForUser(context.Background(), e.dir.clients["app"], e.dir.users["u3"], "", nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"ok/must_change_password_holds_no_role", func(t *testing.T, e *mfaEnv) {
			u := e.dir.users["u1"]
			u.MustChangePassword = true
			if _, err := e.svc.IssueForUser(context.Background(), e.dir.clients["app"], u, "", nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newMFAEnv(t)
			e.mfa.requiredFor = "editor"
			e.clock.Add(time.Second)
			tc.run(t, e)
		})
	}
}

// TestSecondFactorOwed: the question the authorization endpoint asks of a
// browser session before it issues a code.
func TestSecondFactorOwed(t *testing.T) {
	tests := []struct {
		name string
		user string
		amr  []string
		must bool
		want bool
	}{
		{"fail/editor_by_password", "u1", []string{"pwd"}, false, true},
		{"ok/editor_with_mfa", "u1", []string{"pwd", "otp", "mfa"}, false, false},
		{"ok/viewer_by_password", "u3", []string{"pwd"}, false, false},
		{"ok/temporary_password_holds_no_role", "u1", []string{"pwd"}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newMFAEnv(t)
			e.mfa.requiredFor = "editor"
			u := e.dir.users[tc.user]
			u.MustChangePassword = tc.must
			got, err := e.svc.SecondFactorOwed(context.Background(), "web", u, "", tc.amr)
			if err != nil || got != tc.want {
				t.Fatalf("SecondFactorOwed = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
