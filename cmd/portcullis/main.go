// Command portcullis is the Portcullis authorization server and its
// operator commands: serve, migrate, bootstrap, clients, keys, version.
//
// Every command takes the same settings (flags or PORTCULLIS_… environment
// variables; see --help). This is the only place that reads the environment.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/buildinfo"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/store"
)

const usage = `Portcullis — an OAuth 2.0 / OIDC-style authorization server.

Usage:
  portcullis serve                                   run the server
  portcullis migrate [status]                        apply pending migrations, or list them
  portcullis bootstrap --email E --password-stdin    create the first super_admin (idempotent)
  portcullis clients create --id ID --name NAME [--public] [--grants g1,g2] [--scopes "a b"] [--audience AUD]...
      [--redirect-uri U]... [--post-logout-redirect-uri U]... [--first-party] [--native] [--no-pkce]
      [--backchannel-logout-uri U] [--logo-uri U] [--client-uri U]
  portcullis clients list | delete ID | rotate-secret ID
  portcullis keys list | rotate [--force] | revoke KID | reencrypt
  portcullis version

Every command takes the settings of serve; "portcullis serve --help" lists them.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError carries an exit status with its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "bootstrap":
		err = cmdBootstrap(ctx, args[1:], stdin, stdout, stderr)
	case "clients":
		err = cmdClients(ctx, args[1:], stdout, stderr)
	case "keys":
		err = cmdKeys(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "portcullis %s (commit %s, %s)\n", buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
		return 0
	default:
		fmt.Fprintf(stderr, "portcullis: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "portcullis:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "portcullis:", err)
	return 1
}

// commandFlags is a flag set with every setting plus the command's own flags.
type commandFlags struct {
	*flag.FlagSet
	name string
}

func newCommandFlags(name string, stderr io.Writer) *commandFlags {
	fs := config.NewFlagSet(name, stderr)
	cf := &commandFlags{FlagSet: fs, name: name}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Command flags of %s:\n", name)
		fs.VisitAll(func(f *flag.Flag) {
			if !isSettingFlag(f.Name) {
				fmt.Fprintf(stderr, "  --%s  %s\n", f.Name, f.Usage)
			}
		})
		fmt.Fprintln(stderr)
		config.WriteUsage(stderr, name)
	}
	return cf
}

func isSettingFlag(name string) bool {
	for _, s := range config.Settings() {
		if s.Flag() == name {
			return true
		}
	}
	return false
}

// load parses args and the environment into a validated Config, whose
// Warnings include every PORTCULLIS_ variable that is no setting.
func (cf *commandFlags) load(args []string) (config.Config, error) {
	if err := cf.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config.Config{}, err
		}
		return config.Config{}, &exitError{code: 2, msg: err.Error()}
	}
	cfg, err := config.FromFlagSet(cf.FlagSet, os.LookupEnv)
	if err != nil {
		return config.Config{}, &exitError{code: 2, msg: err.Error()}
	}
	cfg.Warnings = append(cfg.Warnings, config.UnknownEnvironment(os.Environ())...)
	return cfg, nil
}

// newLogger returns the command's logger and logs on it, at Warn, each of
// the settings' warnings (config.Config.Warnings). Every command makes its
// logger once, so each warning is logged once at start.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	log := settingsLogger(cfg, w)
	for _, warning := range cfg.Warnings {
		log.Warn(warning)
	}
	return log
}

func settingsLogger(cfg config.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	cf := newCommandFlags("serve", stderr)
	cfg, err := cf.load(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if !cfg.RateLimits {
		log.Warn("PORTCULLIS_RATE_LIMITS=off: every rate limit and login throttle is disabled")
	}
	a, err := app.Build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx, nil, func(addr net.Addr) {
		log.Info("portcullis listening", "addr", addr.String(), "issuer", cfg.Issuer, "version", buildinfo.Version)
		if cfg.Embedded() {
			printNextSteps(stderr, cfg)
		}
	})
}

func printNextSteps(w io.Writer, cfg config.Config) {
	fmt.Fprintf(w, `
Portcullis is running on the embedded store (%s) at %s
Next steps (in another terminal):
  1. Create the first administrator:
       echo 'a-long-passphrase' | ./bin/portcullis bootstrap --email admin@example.com --password-stdin
  2. Create a client for your front-end:
       ./bin/portcullis clients create --id web --name "Web app" --grants password,refresh_token
  3. Get a token:
       curl -s -u web:SECRET -d grant_type=password -d username=admin@example.com -d password=a-long-passphrase %s/oauth2/token
  4. For the admin API (/admin), whose tokens must carry the issuer as audience, a client listing it:
       ./bin/portcullis clients create --id admin-tools --name "Admin tools" --audience %s
  Discovery: %s/.well-known/openid-configuration

`, cfg.DatabaseURL, cfg.Addr, cfg.Issuer, cfg.Issuer, cfg.Issuer)
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	status := len(args) > 0 && args[0] == "status"
	if status {
		args = args[1:]
	}
	cf := newCommandFlags("migrate", stderr)
	cfg, err := cf.load(args)
	if err != nil {
		return err
	}
	open := app.OpenStoreForStatus
	if !status {
		cfg.AutoMigrate = true
		open = app.OpenStore
	}
	st, err := open(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := st.MigrationStatus(ctx)
	if err != nil {
		return fmt.Errorf("read migration status: %w", err)
	}
	pending := 0
	for _, m := range list {
		state := "pending"
		if m.AppliedAt != nil {
			state = "applied " + m.AppliedAt.UTC().Format(time.RFC3339)
		} else {
			pending++
		}
		fmt.Fprintf(stdout, "%04d  %-40s %s\n", m.Version, m.Name, state)
	}
	if !status {
		fmt.Fprintln(stdout, "migrations up to date")
	} else if pending > 0 {
		fmt.Fprintf(stdout, "%d pending; run `portcullis migrate` to apply\n", pending)
	}
	return nil
}

func cmdBootstrap(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cf := newCommandFlags("bootstrap", stderr)
	email := cf.String("email", "", "email of the first super_admin")
	pwStdin := cf.Bool("password-stdin", false, "read the password from standard input (one line)")
	cfg, err := cf.load(args)
	if err != nil {
		return err
	}
	if *email == "" || !strings.Contains(*email, "@") {
		return &exitError{code: 2, msg: "bootstrap needs --email with an email address"}
	}
	if !*pwStdin {
		return &exitError{code: 2, msg: "bootstrap needs --password-stdin (the password is read from standard input, never from a flag)"}
	}
	pw, err := readPasswordLine(stdin)
	if err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	log := newLogger(cfg, stderr)
	core, err := app.OpenCore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer core.Close()
	rules := app.PasswordRules(cfg)
	hasher, err := app.NewHasher(cfg)
	if err != nil {
		return err
	}
	res, err := app.Bootstrap(ctx, core, *email, pw, rules, hasher)
	if err != nil {
		var weak *password.WeakPasswordError
		if errors.As(err, &weak) {
			return &exitError{code: 2, msg: "password refused: " + weak.Reason}
		}
		if errors.Is(err, app.ErrBootstrapEmailTaken) {
			return &exitError{code: 2, msg: err.Error()}
		}
		return err
	}
	if res.Existing {
		fmt.Fprintf(stdout, "a %s already exists; nothing to do (roles synced from the policy)\n", res.Role)
		return nil
	}
	fmt.Fprintf(stdout, "created %s %s (id %s); roles synced from the policy\n", res.Role, res.User.Email, res.User.ID)
	return nil
}

// readPasswordLine reads one line and drops the trailing newline.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 8192)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}

// repeatedFlag collects a flag that may be given more than once; each value
// may also hold a comma-separated list.
type repeatedFlag []string

func (r *repeatedFlag) String() string { return strings.Join(*r, ",") }

func (r *repeatedFlag) Set(v string) error {
	*r = append(*r, splitComma(v)...)
	return nil
}

// uriFlag collects a URI flag that may be given more than once; unlike
// repeatedFlag it never splits a value (a URI may hold a comma).
type uriFlag []string

func (u *uriFlag) String() string { return strings.Join(*u, " ") }

func (u *uriFlag) Set(v string) error {
	*u = append(*u, v)
	return nil
}

// cmdClients runs `portcullis clients …` through the accounts service, the
// one the admin API uses, as the operator (accounts.Operator): the same
// rules (a client's scopes must be permissions the policy knows; the
// built-in client cannot be deleted) and the same audit events, with
// actor_id accounts.OperatorActorID and "via": "cli".
func cmdClients(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &exitError{code: 2, msg: "clients needs a subcommand: create, list, delete ID, rotate-secret ID"}
	}
	sub, args := args[0], args[1:]
	cf := newCommandFlags("clients "+sub, stderr)
	var spec clients.Spec
	var grants, scopes *string
	var audiences repeatedFlag
	var redirectURIs, postLogoutURIs, allowedOrigins uriFlag
	var public, native, noPKCE, refreshCookie *bool
	if sub == "create" {
		cf.StringVar(&spec.ID, "id", "", "client id (3-64 of a-z 0-9 . _ -)")
		cf.StringVar(&spec.Name, "name", "", "display name")
		public = cf.Bool("public", false, "a public client (no secret; client authentication none)")
		grants = cf.String("grants", "password,refresh_token", "comma-separated grant types")
		scopes = cf.String("scopes", "", "space-separated permissions the client may receive, each known to the policy (default: every permission)")
		cf.Var(&audiences, "audience", "aud of its access tokens; repeat it (or separate with commas) for several; never a client id; the issuer lets its tokens use the admin API (default: PORTCULLIS_DEFAULT_AUDIENCE)")
		cf.Var(&redirectURIs, "redirect-uri", "a redirect URI of the authorization code flow (needs --grants authorization_code); repeat it for several")
		cf.Var(&postLogoutURIs, "post-logout-redirect-uri", "where logout may send the browser back; repeat it for several")
		cf.BoolVar(&spec.FirstParty, "first-party", false, "a first-party client: never asks users for consent")
		native = cf.Bool("native", false, "a native app (application_type native): private-use scheme redirect URIs such as com.example.app:/cb")
		noPKCE = cf.Bool("no-pkce", false, "do not require PKCE (confidential clients only; public clients always need it)")
		cf.BoolVar(&spec.RequirePushedAuthorizationRequests, "require-par", false,
			"accept only pushed authorization requests (RFC 9126: POST /oauth2/par first; needs --grants authorization_code)")
		refreshCookie = cf.Bool("refresh-cookie", false,
			"deliver refresh tokens in an HttpOnly cookie, never in the JSON body (a browser app; needs --allowed-origin and PORTCULLIS_REFRESH_REUSE_GRACE of at least 2s)")
		cf.Var(&allowedOrigins, "allowed-origin", "an exact origin (https://app.example.com) the browser app of a --refresh-cookie client runs on; repeat it for several")
		cf.StringVar(&spec.BackchannelLogoutURI, "backchannel-logout-uri", "", "OIDC back-channel logout URI (https)")
		cf.StringVar(&spec.LogoURI, "logo-uri", "", "logo shown on the consent page (https)")
		cf.StringVar(&spec.ClientURI, "client-uri", "", "the client's home page (https)")
	}
	cfg, err := cf.load(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	core, err := app.OpenCore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer core.Close()
	svc, err := app.OperatorAccounts(core, log)
	if err != nil {
		return err
	}
	operator := accounts.Operator()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	switch sub {
	case "create":
		spec.Public = *public
		spec.Grants = splitComma(*grants)
		cf.Visit(func(f *flag.Flag) {
			if f.Name == "scopes" {
				spec.Scopes = strings.Fields(*scopes)
				if spec.Scopes == nil {
					spec.Scopes = []string{}
				}
			}
		})
		spec.Audiences = audiences
		spec.RedirectURIs, spec.PostLogoutRedirectURIs = redirectURIs, postLogoutURIs
		if *native {
			spec.ApplicationType = store.ApplicationNative
		}
		if *noPKCE {
			spec.RequirePKCE = new(bool)
		}
		if *refreshCookie {
			spec.RefreshTokenDelivery = store.RefreshDeliveryCookie
		}
		spec.AllowedOrigins = allowedOrigins
		created, err := svc.CreateClient(ctx, operator, spec)
		if err != nil {
			return operatorError(err)
		}
		out := map[string]any{"client_id": created.ClientID}
		if created.ClientSecret != "" {
			out["client_secret"] = created.ClientSecret
		}
		return json.NewEncoder(stdout).Encode(out)
	case "list":
		views, err := svc.ListClients(ctx)
		if err != nil {
			return operatorError(err)
		}
		return enc.Encode(views)
	case "delete", "rotate-secret":
		if cf.NArg() != 1 {
			return &exitError{code: 2, msg: "clients " + sub + " needs the client id"}
		}
		id := cf.Arg(0)
		if sub == "delete" {
			if err := svc.DeleteClient(ctx, operator, id); err != nil {
				return operatorError(err)
			}
			fmt.Fprintf(stdout, "deleted client %s\n", id)
			return nil
		}
		secret, err := svc.RotateClientSecret(ctx, operator, id)
		if err != nil {
			return operatorError(err)
		}
		return json.NewEncoder(stdout).Encode(map[string]string{"client_id": id, "client_secret": secret})
	}
	return &exitError{code: 2, msg: fmt.Sprintf("unknown clients subcommand %q", sub)}
}

// takeKID removes the first argument shaped like a kid (an RFC 7638
// SHA-256 thumbprint: 43 base64url characters) from args. A kid may start
// with "-", which the flag parser would take for a flag; no flag name is 43
// characters of that alphabet, so the shape is unambiguous.
func takeKID(args []string) (kid string, rest []string) {
	for i, a := range args {
		if a == "--" {
			break
		}
		if keys.ValidKID(a) {
			return a, append(append([]string{}, args[:i]...), args[i+1:]...)
		}
	}
	return "", args
}

// operatorError turns a refusal of the accounts service into the CLI's
// answer: its description, exit status 2 for bad input and 1 otherwise.
func operatorError(err error) error {
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status >= 500 {
		return err
	}
	msg := ae.Description
	if msg == "" {
		msg = ae.Error()
	}
	if ae.Status == 400 {
		return &exitError{code: 2, msg: msg}
	}
	return &exitError{code: 1, msg: msg}
}

func cmdKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &exitError{code: 2, msg: "keys needs a subcommand: list, rotate [--force], revoke KID, reencrypt"}
	}
	sub, args := args[0], args[1:]
	var kid string
	if sub == "revoke" {
		kid, args = takeKID(args)
	}
	cf := newCommandFlags("keys "+sub, stderr)
	var force *bool
	if sub == "rotate" {
		force = cf.Bool("force", false, "rotate even though the next key was published too recently (breaks verifiers that cached the JWKS until they refetch)")
	}
	cfg, err := cf.load(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	core, err := app.OpenCore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer core.Close()
	switch sub {
	case "list":
		list, err := core.Keys.List(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-44s %-6s %-8s %-20s %s\n", "KID", "ALG", "STATE", "CREATED", "PUBLISHED UNTIL")
		for _, k := range list {
			until := "-"
			if k.PublishedUntil != nil {
				until = k.PublishedUntil.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%-44s %-6s %-8s %-20s %s\n", k.KID, k.Alg, k.State, k.CreatedAt.UTC().Format(time.RFC3339), until)
		}
		return nil
	case "rotate", "revoke":
		return keysAsOperator(ctx, core, log, sub, kid, force, cf, stdout)
	case "reencrypt":
		r, err := core.Reencrypt(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "re-encrypted %d private keys and %d TOTP secrets under the first key-encryption key; "+
			"remove the old key once PORTCULLIS_REFRESH_REUSE_GRACE (%s) has passed\n", r.SigningKeys, r.TOTPSecrets, cfg.RefreshReuseGrace)
		return nil
	}
	return &exitError{code: 2, msg: fmt.Sprintf("unknown keys subcommand %q", sub)}
}

// keysAsOperator runs `keys rotate` and `keys revoke` through the accounts
// service, the one the admin API and the console use, as the operator
// (accounts.Operator): the same rules and the same audit events (key.rotated,
// key.revoked with the key's previous state), with actor_id
// accounts.OperatorActorID and "via": "cli". force is rotate's --force.
func keysAsOperator(ctx context.Context, core *app.Core, log *slog.Logger, sub, kid string, force *bool, cf *commandFlags, stdout io.Writer) error {
	if sub == "revoke" {
		if kid == "" && cf.NArg() == 1 {
			kid = cf.Arg(0)
		}
		if kid == "" || cf.NArg() > 1 || cf.NArg() == 1 && kid != cf.Arg(0) {
			return &exitError{code: 2, msg: "keys revoke needs exactly one KID"}
		}
	}
	svc, err := app.OperatorAccounts(core, log)
	if err != nil {
		return err
	}
	if sub == "rotate" {
		rot, err := svc.RotateKeys(ctx, accounts.Operator(), *force)
		if err != nil {
			var early *keys.TooEarlyError
			if errors.As(err, &early) {
				return &exitError{code: 1, msg: fmt.Sprintf("refusing to rotate: the next key has not been published long enough; safe from %s (in %s). Use --force only in an emergency: it breaks verifiers that cached the JWKS until they refetch.",
					early.SafeAt.UTC().Format(time.RFC3339), time.Until(early.SafeAt).Round(time.Second))}
			}
			return operatorError(err)
		}
		retired := ""
		if rot.Retired != nil {
			retired = rot.Retired.KID
		}
		fmt.Fprintf(stdout, "rotated: active %s, retired %s, next %s\n", rot.Activated.KID, retired, rot.Next.KID)
		return nil
	}
	rev, err := svc.RevokeKey(ctx, accounts.Operator(), kid)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, keys.ErrKeyNotFound) {
			return &exitError{code: 1, msg: fmt.Sprintf("no key %q", kid)}
		}
		return operatorError(err)
	}
	if rev.AlreadyRevoked {
		fmt.Fprintf(stdout, "%s was revoked already; nothing changed\n", rev.Revoked.KID)
		return nil
	}
	fmt.Fprintf(stdout, "revoked %s; it is unpublished and its tokens are refused within %s on every instance\n", rev.Revoked.KID, core.Config.KeySyncInterval)
	return nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, p)
	}
	return out
}
