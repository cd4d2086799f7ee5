package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/store"
)

// MaxProvidersFileSize bounds the providers file.
const MaxProvidersFileSize = 1 << 20

// LinkMode is how an unknown upstream account whose verified email matches
// a local account is linked to it.
type LinkMode string

// Link modes.
const (
	// LinkConfirm links only after the person proves the local account on
	// a hosted page (the default).
	LinkConfirm LinkMode = "confirm"
	// LinkVerifiedEmailAuto links without asking when the provider vouches
	// for the email (Provider.VouchesForEmail: email_verified true and the
	// email's domain in allowed_domains) and the local email is verified;
	// otherwise it falls back to confirmation.
	LinkVerifiedEmailAuto LinkMode = "verified_email_auto"
)

// DefaultScopes are the scopes asked of a provider whose entry names none.
var DefaultScopes = []string{"openid", "email", "profile"}

// Secret is a client secret: it prints as "[redacted]" however it is
// formatted or encoded, so it cannot reach a log or an error by accident.
type Secret struct{ v string }

// Reveal returns the secret itself, for the token request to the provider.
func (s Secret) Reveal() string { return s.v }

// IsSet reports whether there is a secret.
func (s Secret) IsSet() bool { return s.v != "" }

// String implements fmt.Stringer.
func (Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return "[redacted]" }

// MarshalText implements encoding.TextMarshaler (JSON, YAML, slog).
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// JIT is a provider's just-in-time account creation.
type JIT struct {
	Enabled bool
	// DefaultRole is the role a created user holds.
	DefaultRole string
}

// Provider is one upstream OpenID provider of the providers file.
type Provider struct {
	// ID names the provider in paths (/login/{id}) and in identities.
	ID string
	// Name labels its button.
	Name   string
	Issuer string
	// ClientID is Portcullis's client at the provider: the aud of its id
	// tokens.
	ClientID     string
	ClientSecret Secret
	Scopes       []string
	// AllowedDomains, when not empty, are the only email domains (lower
	// case) whose people may sign in through the provider; they are also
	// the only domains whose emails the provider vouches for
	// (VouchesForEmail).
	AllowedDomains []string
	JIT            JIT
	Link           LinkMode
	// TrustMFA lets the provider's own multi-factor authentication count
	// here (amr "mfa").
	TrustMFA bool
}

// DomainAllowed reports whether email's domain is one of AllowedDomains
// (lower-case ASCII names) compared as accounts compare addresses
// (store.EmailKey: ASCII case ignored, nothing else folded, so a Kelvin sign
// is not a "k"); false for an empty list or a malformed address.
func (p *Provider) DomainAllowed(email string) bool {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return false
	}
	return slices.Contains(p.AllowedDomains, store.EmailKey(email[at+1:]))
}

// VouchesForEmail reports whether Portcullis takes p's word that c's email
// belongs to the person: p says email_verified true and is authoritative
// for the email's domain, which is in p's AllowedDomains. An empty
// AllowedDomains lets every domain sign in but makes p authoritative for
// none: a provider may call verified an address of a domain it does not
// run (a social provider's account named boss@example.com), and only the
// operator's list says whose word is the domain owner's. It is the one rule
// for a local email verified on a provider's word: a verified_email_auto
// link needs it, and a just-in-time account's email is verified only with
// it, so an account another provider created for an address cannot be
// auto-linked later by the provider that does own the domain.
func (p *Provider) VouchesForEmail(c Claims) bool {
	return c.Email != "" && c.EmailVerified && p.DomainAllowed(c.Email)
}

// VouchesFor reports whether the configured provider with the id is
// authoritative for email, a local account's address: VouchesForEmail's
// rule for an identity already linked (whose sign-ins, with allowed_domains,
// carried email_verified true). A provider no longer configured vouches for
// nothing. It judges the identities an account holds: a password reset keeps
// only those (accounts.Service.ResetPassword), and verified_email_auto
// joins no account holding another (Decide).
func (ps *Providers) VouchesFor(providerID, email string) bool {
	p, ok := ps.Get(providerID)
	return ok && p.DomainAllowed(email)
}

// Providers is the validated providers file.
type Providers struct {
	list []*Provider
	byID map[string]*Provider
}

// List returns the providers in file order.
func (ps *Providers) List() []*Provider {
	if ps == nil {
		return nil
	}
	return slices.Clone(ps.list)
}

// Get returns the provider with the id, and false when there is none.
func (ps *Providers) Get(id string) (*Provider, bool) {
	if ps == nil {
		return nil, false
	}
	p, ok := ps.byID[id]
	return p, ok
}

// Len is the number of providers.
func (ps *Providers) Len() int {
	if ps == nil {
		return 0
	}
	return len(ps.list)
}

// ForToken returns the provider whose issuer is iss and whose client_id is
// one of aud (the token-exchange rule), and false when there is none.
func (ps *Providers) ForToken(iss string, aud []string) (*Provider, bool) {
	if ps == nil {
		return nil, false
	}
	if iss == "accounts.google.com" {
		// Google's id tokens may name the issuer without its scheme (go-oidc
		// accepts this for Google only).
		iss = "https://accounts.google.com"
	}
	for _, p := range ps.list {
		if p.Issuer == iss && slices.Contains(aud, p.ClientID) {
			return p, true
		}
	}
	return nil, false
}

// NewProviders builds a Providers from already validated providers (tests
// and programs that build providers in code); ids must be unique.
func NewProviders(list ...*Provider) (*Providers, error) {
	ps := &Providers{byID: map[string]*Provider{}}
	for _, p := range list {
		if _, dup := ps.byID[p.ID]; dup || !providerIDRE.MatchString(p.ID) {
			return nil, fmt.Errorf("provider id %q is invalid or used twice", p.ID)
		}
		if p.Link == "" {
			p.Link = LinkConfirm
		}
		if len(p.Scopes) == 0 {
			p.Scopes = slices.Clone(DefaultScopes)
		}
		ps.list = append(ps.list, p)
		ps.byID[p.ID] = p
	}
	return ps, nil
}

// Load reads and validates the providers file at path (see Parse).
func Load(path string, pol *policy.Policy, env func(string) (string, bool)) (*Providers, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load identity providers: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxProvidersFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load identity providers %s: %w", path, err)
	}
	return Parse(path, data, pol, env)
}

var (
	providerIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	domainRE     = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// Parse validates a providers file: a mapping whose one key providers is a
// list of provider objects. Every problem is reported at once, each a
// *policy.ParseError located by line and column (several are joined with
// errors.Join); unknown fields are refused. client_secret_env names an
// environment variable looked up through env. A default_role must be a
// role of pol that the privilege ceiling of pol's top role allows granting.
// No error ever contains a secret.
func Parse(name string, data []byte, pol *policy.Policy, env func(string) (string, bool)) (*Providers, error) {
	if len(data) > MaxProvidersFileSize {
		return nil, &policy.ParseError{File: name, Msg: fmt.Sprintf("larger than %d bytes", MaxProvidersFileSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &policy.ParseError{File: name, Msg: "empty file: it must list providers"}
		}
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, &policy.ParseError{File: name, Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document"}
	}
	pr := &parser{file: name, pol: pol, env: env}
	ps := pr.document(&doc)
	if err := pr.err(); err != nil {
		return nil, err
	}
	return ps, nil
}

// yamlError turns a yaml.v3 syntax error into a ParseError. The YAML
// library quotes no values in its syntax errors beyond the offending
// token's kind, so no secret leaks through it.
func yamlError(name string, err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscan(m[1], &line)
		return &policy.ParseError{File: name, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &policy.ParseError{File: name, Msg: "invalid YAML"}
}

type parser struct {
	file string
	pol  *policy.Policy
	env  func(string) (string, bool)
	errs []*policy.ParseError
}

func (pr *parser) errorf(n *yaml.Node, format string, args ...any) {
	e := &policy.ParseError{File: pr.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	pr.errs = append(pr.errs, e)
}

func (pr *parser) err() error { return policy.JoinParseErrors(pr.errs) }

// mapping iterates a mapping node's pairs, refusing aliases, merge keys,
// non-string and duplicate keys.
func (pr *parser) mapping(n *yaml.Node, what string, each func(key string, k, v *yaml.Node)) bool {
	if n.Kind == yaml.AliasNode {
		pr.errorf(n, "%s: YAML aliases are not supported", what)
		return false
	}
	if n.Kind != yaml.MappingNode {
		pr.errorf(n, "%s must be a mapping", what)
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			pr.errorf(k, "%s: keys must be plain names", what)
			continue
		}
		if v.Kind == yaml.AliasNode {
			pr.errorf(v, "%s: YAML aliases are not supported", what)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			pr.errorf(k, "%s: %q is defined twice (first on line %d)", what, k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		each(k.Value, k, v)
	}
	return true
}

// str reads a string scalar. A secret's value is never echoed: the
// messages name the field only.
func (pr *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		pr.errorf(n, "%s must be a string", what)
		return "", false
	}
	return n.Value, true
}

func (pr *parser) boolean(n *yaml.Node, what string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		pr.errorf(n, "%s must be true or false", what)
		return false
	}
	return n.Value == "true"
}

func (pr *parser) list(n *yaml.Node, what string) ([]string, []*yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		pr.errorf(n, "%s must be a list", what)
		return nil, nil
	}
	var out []string
	var nodes []*yaml.Node
	seen := map[string]int{}
	for _, item := range n.Content {
		s, ok := pr.str(item, what+" entries")
		if !ok {
			continue
		}
		if line, dup := seen[s]; dup {
			pr.errorf(item, "%s: %q is listed twice (first on line %d)", what, s, line)
			continue
		}
		seen[s] = item.Line
		out, nodes = append(out, s), append(nodes, item)
	}
	return out, nodes
}

func (pr *parser) document(doc *yaml.Node) *Providers {
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	ps := &Providers{byID: map[string]*Provider{}}
	var listNode *yaml.Node
	pr.mapping(root, "the providers file", func(key string, k, v *yaml.Node) {
		if key != "providers" {
			pr.errorf(k, "unknown field %q (expected providers)", key)
			return
		}
		listNode = v
	})
	if listNode == nil {
		if len(pr.errs) == 0 {
			pr.errorf(root, "the providers file has no providers: list")
		}
		return ps
	}
	if listNode.Kind != yaml.SequenceNode {
		pr.errorf(listNode, "providers must be a list of provider objects")
		return ps
	}
	ids := map[string]int{}
	clients := map[[2]string]int{}
	for _, n := range listNode.Content {
		p, idNode := pr.provider(n)
		if p == nil {
			continue
		}
		if line, dup := ids[p.ID]; dup && p.ID != "" {
			pr.errorf(idNode, "provider id %q is used twice (first on line %d)", p.ID, line)
			continue
		}
		ids[p.ID] = idNode.Line
		key := [2]string{p.Issuer, p.ClientID}
		if line, dup := clients[key]; dup && p.Issuer != "" {
			pr.errorf(idNode, "provider %q: the same issuer and client_id as the provider on line %d (an id token would match both)", p.ID, line)
			continue
		}
		clients[key] = idNode.Line
		ps.list = append(ps.list, p)
		ps.byID[p.ID] = p
	}
	return ps
}

// provider reads and checks one provider object.
func (pr *parser) provider(n *yaml.Node) (*Provider, *yaml.Node) {
	p := &Provider{Link: LinkConfirm}
	what := "provider"
	if id := field(n, "id"); id != nil && id.Kind == yaml.ScalarNode {
		what = fmt.Sprintf("provider %q", id.Value)
	}
	var secretNode, secretEnvNode, jitNode, issuerNode *yaml.Node
	var secretEnv string
	scopesGiven := false
	ok := pr.mapping(n, what, func(key string, k, v *yaml.Node) {
		switch key {
		case "id":
			if s, ok := pr.str(v, what+": id"); ok {
				if !providerIDRE.MatchString(s) {
					pr.errorf(v, "%s: id must be 1 to 32 of a-z 0-9 _ - starting with a letter or digit (it appears in URLs)", what)
				}
				p.ID = s
			}
		case "name":
			if s, ok := pr.str(v, what+": name"); ok {
				if strings.TrimSpace(s) == "" || len(s) > 100 {
					pr.errorf(v, "%s: name must be 1 to 100 characters", what)
				}
				p.Name = s
			}
		case "issuer":
			issuerNode = v
			if s, ok := pr.str(v, what+": issuer"); ok {
				if err := checkIssuer(s); err != nil {
					pr.errorf(v, "%s: issuer %v", what, err)
				}
				p.Issuer = s
			}
		case "client_id":
			if s, ok := pr.str(v, what+": client_id"); ok {
				if strings.TrimSpace(s) == "" {
					pr.errorf(v, "%s: client_id must not be empty", what)
				}
				p.ClientID = s
			}
		case "client_secret":
			secretNode = v
			if v.Kind != yaml.ScalarNode || v.Tag != "!!str" || v.Value == "" {
				pr.errorf(v, "%s: client_secret must be a non-empty string (its value is not shown)", what)
				return
			}
			p.ClientSecret = Secret{v.Value}
		case "client_secret_env":
			secretEnvNode = v
			if s, ok := pr.str(v, what+": client_secret_env"); ok {
				if !envNameRE.MatchString(s) {
					pr.errorf(v, "%s: client_secret_env must name an environment variable", what)
					return
				}
				secretEnv = s
			}
		case "scopes":
			scopesGiven = true
			p.Scopes, _ = pr.list(v, what+": scopes")
			for _, sc := range p.Scopes {
				if sc == "" || strings.ContainsAny(sc, " \t\"\\") {
					pr.errorf(v, "%s: scope %q is not a valid scope token", what, sc)
				}
			}
			if !slices.Contains(p.Scopes, "openid") {
				pr.errorf(v, "%s: scopes must include openid", what)
			}
		case "allowed_domains":
			list, nodes := pr.list(v, what+": allowed_domains")
			for i, d := range list {
				if !domainRE.MatchString(d) {
					pr.errorf(nodes[i], "%s: allowed_domains: %q is not a lower-case domain name such as example.com", what, d)
					continue
				}
				p.AllowedDomains = append(p.AllowedDomains, d)
			}
		case "jit":
			jitNode = k
			pr.mapping(v, what+": jit", func(key string, k, v *yaml.Node) {
				switch key {
				case "enabled":
					p.JIT.Enabled = pr.boolean(v, what+": jit.enabled")
				case "default_role":
					if s, ok := pr.str(v, what+": jit.default_role"); ok {
						p.JIT.DefaultRole = s
						pr.checkRole(v, what, s)
					}
				default:
					pr.errorf(k, "%s: jit: unknown field %q (expected enabled or default_role)", what, key)
				}
			})
		case "link":
			if s, ok := pr.str(v, what+": link"); ok {
				switch LinkMode(s) {
				case LinkConfirm, LinkVerifiedEmailAuto:
					p.Link = LinkMode(s)
				default:
					pr.errorf(v, "%s: link must be confirm or verified_email_auto", what)
				}
			}
		case "trust_mfa":
			p.TrustMFA = pr.boolean(v, what+": trust_mfa")
		default:
			pr.errorf(k, "%s: unknown field %q (expected id, name, issuer, client_id, client_secret, client_secret_env, scopes, allowed_domains, jit, link or trust_mfa)", what, key)
		}
	})
	if !ok {
		return nil, nil
	}
	idNode := field(n, "id")
	if idNode == nil {
		idNode = n
		pr.errorf(n, "%s: id is required", what)
	}
	if p.Name == "" && field(n, "name") == nil {
		pr.errorf(n, "%s: name is required", what)
	}
	if issuerNode == nil {
		pr.errorf(n, "%s: issuer is required", what)
	}
	if p.ClientID == "" && field(n, "client_id") == nil {
		pr.errorf(n, "%s: client_id is required", what)
	}
	switch {
	case secretNode != nil && secretEnvNode != nil:
		pr.errorf(secretEnvNode, "%s: give client_secret or client_secret_env, not both", what)
	case secretEnv != "":
		v, ok := "", false
		if pr.env != nil {
			v, ok = pr.env(secretEnv)
		}
		if !ok || v == "" {
			pr.errorf(secretEnvNode, "%s: client_secret_env: the environment variable %s is not set", what, secretEnv)
		}
		p.ClientSecret = Secret{v}
	}
	if !scopesGiven {
		p.Scopes = slices.Clone(DefaultScopes)
	}
	if p.JIT.Enabled && p.JIT.DefaultRole == "" {
		role, ok := "", false
		if pr.pol != nil {
			role, ok = pr.pol.DefaultRole()
		}
		if !ok {
			pr.errorf(jitNode, "%s: jit.enabled needs jit.default_role (the policy names no default role)", what)
		} else {
			p.JIT.DefaultRole = role
			pr.checkRole(jitNode, what, role)
		}
	}
	return p, idNode
}

// checkRole refuses a JIT role the policy lacks or that its top role could
// not grant (the privilege ceiling of the most privileged actor).
func (pr *parser) checkRole(n *yaml.Node, what, role string) {
	if pr.pol == nil {
		return
	}
	if !pr.pol.HasRole(role) {
		pr.errorf(n, "%s: jit.default_role %q is not a role of the policy", what, role)
		return
	}
	names := pr.pol.RoleNames()
	if len(names) == 0 {
		return
	}
	if err := pr.pol.CanAssign(names[:1], role); err != nil {
		pr.errorf(n, "%s: jit.default_role %q: the policy's top role %q could not grant it: %v", what, role, names[0], err)
	}
}

// field returns the value node of key in mapping n, or nil.
func field(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// checkIssuer accepts an absolute https URL without query or fragment, or
// plain http on a loopback IP literal (development and tests).
func checkIssuer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return errors.New("must be an absolute URL such as https://accounts.google.com")
	}
	if u.RawQuery != "" || u.Fragment != "" || strings.Contains(s, "#") || strings.Contains(s, "?") {
		return errors.New("must have no query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if redirecturi.IsLoopbackIP(u.Hostname()) {
			return nil
		}
		return errors.New("must use https (plain http only on 127.0.0.1 or [::1])")
	}
	return errors.New("must be an https URL")
}
