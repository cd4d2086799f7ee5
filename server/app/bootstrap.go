package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/store"
)

// BootstrapResult says what Bootstrap did.
type BootstrapResult struct {
	Role     string
	User     store.User
	Existing bool // a user with the top role already existed; nothing was created
}

// ErrBootstrapEmailTaken is Bootstrap's refusal to create the first user
// with an address another account already has.
var ErrBootstrapEmailTaken = errors.New("an account with this email address already exists")

// Bootstrap syncs roles (done by OpenCore) and creates the first user with
// the policy's highest role unless one exists. It is idempotent. It only
// ever creates an account: an address an account already has (registered
// by anyone, with a password Bootstrap was not given) is refused with
// ErrBootstrapEmailTaken, never promoted. The operator creates it:
// user.created has actor_id accounts.OperatorActorID.
func Bootstrap(ctx context.Context, core *Core, email, pw string, rules password.Rules, hasher *password.Hasher) (BootstrapResult, error) {
	roles := core.Policy.Roles()
	if len(roles) == 0 {
		return BootstrapResult{}, errors.New("the policy has no roles")
	}
	top := roles[0]
	for _, r := range roles[1:] {
		if r.Level > top.Level {
			top = r
		}
	}
	res := BootstrapResult{Role: top.Name}
	n, err := core.Store.CountUsersWithRole(ctx, top.Name)
	if err != nil {
		return res, fmt.Errorf("count %s users: %w", top.Name, err)
	}
	if n > 0 {
		res.Existing = true
		return res, nil
	}
	email = strings.TrimSpace(email)
	if err := rules.Check(pw, email); err != nil {
		return res, err
	}
	hash, err := hasher.Hash(ctx, pw)
	if err != nil {
		return res, fmt.Errorf("hash password: %w", err)
	}
	u := store.User{Email: email, PasswordHash: hash, Active: true, EmailVerified: true, Roles: []string{top.Name}}
	if err := core.Store.CreateUser(ctx, &u); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			// Whoever holds that account (public registration, an invite)
			// chose its password: granting it the top role would hand the
			// instance to them. The operator picks another address, or
			// removes that account first.
			return res, fmt.Errorf("%w (%s), without the %s role: bootstrap creates a new account only; give another address, or delete that account first",
				ErrBootstrapEmailTaken, email, top.Name)
		}
		return res, fmt.Errorf("create %s: %w", top.Name, err)
	}
	res.User = u
	operator := accounts.Operator()
	core.Audit.Record(ctx, store.AuditEvent{Action: "user.created", Outcome: store.OutcomeSuccess, ActorID: operator.ID,
		TargetID: u.ID, UserAgent: operator.UserAgent, Details: map[string]string{"role": top.Name, "via": "bootstrap"}})
	return res, nil
}

// NewHasher returns the password hasher for the configured argon2id parameters.
func NewHasher(cfg config.Config) (*password.Hasher, error) {
	p := password.DefaultParams()
	p.Memory, p.Time, p.Threads = cfg.Argon2MemoryKiB, cfg.Argon2Time, cfg.Argon2Threads
	h, err := password.NewHasher(p)
	if err != nil {
		return nil, fmt.Errorf("password hashing settings (PORTCULLIS_ARGON2_*): %w", err)
	}
	return h, nil
}

// PasswordRules returns the configured password rules.
func PasswordRules(cfg config.Config) password.Rules {
	r := password.DefaultRules()
	r.MinLength, r.MaxLength = cfg.PasswordMinLength, cfg.PasswordMaxLength
	r.ContextWords = append(r.ContextWords, cfg.ProductName)
	return r
}
