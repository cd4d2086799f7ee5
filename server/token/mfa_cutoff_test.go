package token

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// cutAt ends every session of u1 (a password reset, a deactivation) once,
// the first time a hook of the MFA grant runs: the clock moves on a
// millisecond either side, as a cut-off written by another request would
// land between two steps of the grant.
type cutAt struct {
	state *fakeState
	clock *fakeClock
	armed bool
}

func (c *cutAt) fire(ctx context.Context) {
	if !c.armed {
		return
	}
	c.armed = false
	c.clock.Add(time.Millisecond)
	_ = c.state.RevokeUserSessions(ctx, "u1", c.clock.Now())
	c.clock.Add(time.Millisecond)
}

// cutAfterRead is the token state with the cut-off landing right after
// the grant's first read of a cut-off has answered (alone, or with the
// family's creation).
type cutAfterRead struct {
	*fakeState
	cut *cutAt
}

func (s cutAfterRead) IsAccessTokenRevoked(ctx context.Context, ref store.AccessTokenRef) (bool, error) {
	r, err := s.fakeState.IsAccessTokenRevoked(ctx, ref)
	s.cut.fire(ctx)
	return r, err
}

func (s cutAfterRead) CreateFamilyAndCheck(ctx context.Context, fam store.RefreshFamily, firstHash []byte, check store.AccessTokenRef) (bool, error) {
	r, err := s.fakeState.CreateFamilyAndCheck(ctx, fam, firstHash, check)
	s.cut.fire(ctx)
	return r, err
}

// cutWhileSigning is the signer with the cut-off landing while the first
// token is signed.
type cutWhileSigning struct {
	fakeSigner
	cut *cutAt
}

func (s cutWhileSigning) Sign(claims any, typ string) (string, error) {
	s.cut.fire(context.Background())
	return s.fakeSigner.Sign(claims, typ)
}

// TestMFAGrantVoidedByCutoffWhileIssuing: a login whose password step came
// before the user's cut-off (every session ended: a password reset, a
// deactivation) yields nothing that outlives the cut-off, wherever the
// cut-off lands in the MFA grant: the grant is refused, or what it issued
// is revoked. The MFA grant checks after issuing, through the code grant's
// routine (voidAfterIssue). Before, it checked before issuing only, and a
// cut-off landing between that check and the issue left a client without
// refresh tokens a valid access token.
func TestMFAGrantVoidedByCutoffWhileIssuing(t *testing.T) {
	tests := []struct {
		name, client string
		at           string // where the cut-off lands: "before" the grant, "after_read", "signing"
	}{
		{"fail/before_grant/no_refresh", "pwonly", "before"},
		{"fail/before_grant/refresh", "app", "before"},
		{"fail/after_first_cutoff_read/no_refresh", "pwonly", "after_read"},
		{"fail/after_first_cutoff_read/refresh", "app", "after_read"},
		{"fail/while_signing/no_refresh", "pwonly", "signing"},
		{"fail/while_signing/refresh", "app", "signing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMFAEnv(t)
			e.dir.clients["pwonly"] = store.Client{ID: "pwonly", SecretHash: HashSecret("s3cret"), Grants: []string{GrantPassword}, FirstParty: true}
			cut := &cutAt{state: e.state, clock: e.clock}
			var state store.TokenState = e.state
			var signer Signer = fakeSigner{alg: "EdDSA"}
			switch tt.at {
			case "after_read":
				state = cutAfterRead{fakeState: e.state, cut: cut}
			case "signing":
				signer = cutWhileSigning{fakeSigner: fakeSigner{alg: "EdDSA"}, cut: cut}
			}
			e.svc = NewService(e.svc.cfg, Deps{Clients: e.dir, Users: e.dir, State: state, Signer: signer, Sealer: plainSealer{},
				Permissions: fakePerms{}, Audit: e.audit, Metrics: e.metrics, Codes: e.once, Now: e.clock.Now,
				Checker: fakeChecker{dir: e.dir}, MFA: e.mfa})
			tok := e.challenge(t, tt.client, "u1", "docs:read")
			e.clock.Add(10 * time.Second)
			cut.armed = true
			if tt.at == "before" {
				cut.fire(context.Background())
			}
			resp, err := e.token(t, tt.client, map[string]string{"grant_type": GrantMFAOTP, "mfa_token": tok, "otp": "123456"})
			if cut.armed {
				t.Fatal("the cut-off never landed: the hook is not on the grant's path")
			}
			if err != nil {
				wantOAuthError(t, err, "invalid_grant")
				if slices.Contains(e.audit.actions(), "login.succeeded") {
					t.Fatalf("a refused login was recorded as succeeded: %v", e.audit.actions())
				}
				return
			}
			jti, _ := claimsOf(t, resp.AccessToken)["jti"].(string)
			iat, _ := jtiTime(jti)
			if revoked, _ := e.state.IsAccessTokenRevoked(context.Background(), store.AccessTokenRef{JTI: jti, UserID: "u1", IssuedAt: iat}); !revoked {
				t.Fatalf("the access token outlives the cut-off (issued %s, cut-off %s)",
					iat.Format(time.RFC3339Nano), e.state.cutoffs["u1"].Format(time.RFC3339Nano))
			}
			if sid, ok := parseRefreshToken(resp.RefreshToken); ok && !e.state.familyRevoked(sid) {
				t.Fatalf("the refresh family %s outlives the cut-off", sid)
			}
		})
	}
}
