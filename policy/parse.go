package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxPolicySize bounds the size of a policy file.
const MaxPolicySize = 1 << 20

// Bounds on what a policy may contain.
const (
	MaxLevel             = 1_000_000
	maxRoleNameLength    = 64
	maxDescriptionLength = 1000
)

// ParseError is one problem in a policy file, located by file, line and column (1-based; zero when
// the problem concerns the whole file). Parse and Load return one ParseError, or several joined
// with errors.Join; errors.As finds the first.
type ParseError struct {
	File   string
	Line   int
	Column int
	Msg    string
}

// Error formats the problem as file:line:column: message.
func (e *ParseError) Error() string {
	if e.Line > 0 && e.Column > 0 {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

var roleNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse parses and validates a policy; name is used in error messages (usually the file path).
func Parse(name string, data []byte) (*Policy, error) {
	if len(data) > MaxPolicySize {
		return nil, &ParseError{File: name, Msg: fmt.Sprintf("policy larger than %d bytes", MaxPolicySize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{File: name, Msg: "empty policy: it must define roles"}
		}
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, &ParseError{File: name, Line: extra.Line, Column: extra.Column, Msg: "more than one YAML document; a policy is one document"}
	}
	ps := &parser{file: name}
	raw := ps.document(&doc)
	if raw == nil {
		return nil, ps.err()
	}
	p := ps.build(raw)
	if err := ps.err(); err != nil {
		return nil, err
	}
	p.source = name
	return p, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a yaml.v3 syntax error into a ParseError.
func yamlError(name string, err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ParseError{File: name, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &ParseError{File: name, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// parser walks the YAML tree and collects every problem it finds.
type parser struct {
	file string
	errs []*ParseError
}

func (ps *parser) errorf(n *yaml.Node, format string, args ...any) {
	e := &ParseError{File: ps.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	ps.errs = append(ps.errs, e)
}

func (ps *parser) err() error { return JoinParseErrors(ps.errs) }

// JoinParseErrors is every problem found in a file as one error, in the
// order of the file (line, then column): nil for none, the ParseError
// itself for one, an errors.Join of them for more. Other files validated
// the same way (the identity providers file) report with it too.
func JoinParseErrors(found []*ParseError) error {
	if len(found) == 0 {
		return nil
	}
	slices.SortStableFunc(found, func(a, b *ParseError) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	if len(found) == 1 {
		return found[0]
	}
	errs := make([]error, len(found))
	for i, e := range found {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// rawPolicy is the policy as written, with the nodes needed to locate later problems.
type rawPolicy struct {
	defaultRole     string
	defaultRoleNode *yaml.Node
	catalogue       []rawItem
	hasCatalogue    bool
	roles           []*rawRole
	rolesNode       *yaml.Node
	// mfaLevel is mfa.required_for_level (NoLevel when unset).
	mfaLevel int
}

type rawRole struct {
	name         string
	node         *yaml.Node
	level        int
	levelSet     bool
	description  string
	permissions  []rawItem
	inherits     []rawItem
	assignableBy []rawItem
	platform     bool
}

type rawItem struct {
	value string
	node  *yaml.Node
}

// plain rejects aliases, which a policy has no use for and which could hide where a value came from.
func (ps *parser) plain(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		ps.errorf(n, "YAML aliases are not supported in a policy")
		return false
	}
	return true
}

// mapping iterates the key/value pairs of a mapping node, reporting non-string and duplicate keys.
func (ps *parser) mapping(n *yaml.Node, what string, each func(key string, k, v *yaml.Node)) {
	if !ps.plain(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		ps.errorf(n, "%s must be a mapping", what)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !ps.plain(k) || !ps.plain(v) {
			continue
		}
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			ps.errorf(k, "%s: merge keys (<<) are not supported in a policy", what)
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			ps.errorf(k, "%s: keys must be plain names", what)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			ps.errorf(k, "%s: %q is defined twice (first on line %d)", what, k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		each(k.Value, k, v)
	}
}

// str reads a string scalar.
func (ps *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		ps.errorf(n, "%s must be a string", what)
		return "", false
	}
	return n.Value, true
}

// list reads a sequence of strings; null is an empty list. Duplicates are reported.
func (ps *parser) list(n *yaml.Node, what string) []rawItem {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		ps.errorf(n, "%s must be a list", what)
		return nil
	}
	var out []rawItem
	seen := map[string]int{}
	for _, item := range n.Content {
		if !ps.plain(item) {
			continue
		}
		s, ok := ps.str(item, what+" entries")
		if !ok {
			continue
		}
		if line, dup := seen[s]; dup {
			ps.errorf(item, "%s: %q is listed twice (first on line %d)", what, s, line)
			continue
		}
		seen[s] = item.Line
		out = append(out, rawItem{value: s, node: item})
	}
	return out
}

// document reads the top level of the policy.
func (ps *parser) document(doc *yaml.Node) *rawPolicy {
	root := doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			ps.errorf(nil, "empty policy: it must define roles")
			return nil
		}
		root = doc.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		ps.errorf(nil, "empty policy: it must define roles")
		return nil
	}
	raw := &rawPolicy{mfaLevel: NoLevel}
	ps.mapping(root, "policy", func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Value != "1" {
				ps.errorf(v, "version must be 1")
			}
		case "default_role":
			if s, ok := ps.str(v, "default_role"); ok {
				raw.defaultRole, raw.defaultRoleNode = s, v
			}
		case "permissions":
			raw.hasCatalogue = true
			raw.catalogue = ps.list(v, "permissions")
			for _, it := range raw.catalogue {
				if err := checkPermission(it.value, false); err != nil {
					ps.errorf(it.node, "permissions: %v (the catalogue lists concrete permissions, no wildcards)", err)
				}
			}
		case "roles":
			raw.rolesNode = k
			ps.mapping(v, "roles", func(name string, k, v *yaml.Node) {
				raw.roles = append(raw.roles, ps.role(name, k, v))
			})
		case "mfa":
			raw.mfaLevel = ps.mfa(v)
		default:
			ps.errorf(k, "unknown field %q (expected version, default_role, permissions, roles or mfa)", key)
		}
	})
	if raw.rolesNode == nil && len(ps.errs) == 0 {
		ps.errorf(nil, "the policy defines no roles (missing roles:)")
	}
	return raw
}

// mfa reads the mfa section: {required_for_level: N}, the role level from
// which users must use a second factor (NoLevel when absent). A level no
// role has is allowed.
func (ps *parser) mfa(v *yaml.Node) int {
	level := NoLevel
	ps.mapping(v, "mfa", func(key string, fk, fv *yaml.Node) {
		switch key {
		case "required_for_level":
			var n int
			if fv.Kind != yaml.ScalarNode || fv.Tag != "!!int" || fv.Decode(&n) != nil {
				ps.errorf(fv, "mfa: required_for_level must be an integer")
				return
			}
			if n < 0 || n > MaxLevel {
				ps.errorf(fv, "mfa: required_for_level must be between 0 and %d", MaxLevel)
				return
			}
			level = n
		default:
			ps.errorf(fk, "mfa: unknown field %q (expected required_for_level)", key)
		}
	})
	return level
}

// role reads one role definition.
func (ps *parser) role(name string, k, v *yaml.Node) *rawRole {
	r := &rawRole{name: name, node: k}
	if len(name) > maxRoleNameLength || !roleNameRE.MatchString(name) {
		ps.errorf(k, "role name %q must be 1 to %d lower-case letters, digits, '_' or '-', starting with a letter", name, maxRoleNameLength)
	}
	what := fmt.Sprintf("role %q", name)
	ps.mapping(v, what, func(key string, fk, fv *yaml.Node) {
		switch key {
		case "level":
			var level int
			if fv.Kind != yaml.ScalarNode || fv.Tag != "!!int" || fv.Decode(&level) != nil {
				ps.errorf(fv, "%s: level must be an integer", what)
				return
			}
			if level < 0 || level > MaxLevel {
				ps.errorf(fv, "%s: level must be between 0 and %d", what, MaxLevel)
				return
			}
			r.level, r.levelSet = level, true
		case "description":
			if s, ok := ps.str(fv, what+": description"); ok {
				if len(s) > maxDescriptionLength {
					ps.errorf(fv, "%s: description longer than %d bytes", what, maxDescriptionLength)
				}
				r.description = s
			}
		case "permissions":
			r.permissions = ps.list(fv, what+": permissions")
			for _, it := range r.permissions {
				if err := checkPermission(it.value, true); err != nil {
					ps.errorf(it.node, "%s: %v", what, err)
				}
			}
		case "inherits":
			r.inherits = ps.list(fv, what+": inherits")
		case "assignable_by":
			r.assignableBy = ps.list(fv, what+": assignable_by")
		case "platform":
			if fv.Kind != yaml.ScalarNode || fv.Tag != "!!bool" || fv.Decode(&r.platform) != nil {
				ps.errorf(fv, "%s: platform must be true or false", what)
			}
		default:
			ps.errorf(fk, "%s: unknown field %q (expected level, description, permissions, inherits, assignable_by or platform)", what, key)
		}
	})
	if v.Kind == yaml.MappingNode && !r.levelSet && !ps.hasErrorAt(v) {
		ps.errorf(k, "%s: level is required", what)
	}
	return r
}

// hasErrorAt reports whether a problem was already reported inside node n's lines (to avoid
// piling "level is required" on top of "level must be an integer").
func (ps *parser) hasErrorAt(n *yaml.Node) bool {
	for _, c := range n.Content {
		for _, e := range ps.errs {
			if e.Line == c.Line && e.Column == c.Column {
				return true
			}
		}
	}
	return false
}

// build validates the relations between roles and computes expanded permissions.
func (ps *parser) build(raw *rawPolicy) *Policy {
	if raw.rolesNode != nil && len(raw.roles) == 0 && len(ps.errs) == 0 {
		ps.errorf(raw.rolesNode, "roles: the policy defines no roles")
	}
	p := &Policy{roles: map[string]*roleDef{}}
	byName := map[string]*rawRole{}
	for _, r := range raw.roles {
		byName[r.name] = r
		def := &roleDef{name: r.name, level: r.level, description: r.description, platform: r.platform}
		for _, it := range r.permissions {
			def.patterns = append(def.patterns, it.value)
		}
		for _, it := range r.inherits {
			def.inherits = append(def.inherits, it.value)
		}
		for _, it := range r.assignableBy {
			def.assignableBy = append(def.assignableBy, it.value)
		}
		p.roles[r.name] = def
	}

	// The known permissions: the catalogue (when present), the admin permissions, and every concrete
	// permission a role names. With a catalogue, a role may name only catalogued permissions.
	catalogue := slices.Clone(adminPermissions)
	for _, it := range raw.catalogue {
		catalogue = append(catalogue, it.value)
	}
	catalogue = sortedSet(catalogue)
	known := slices.Clone(catalogue)
	for _, r := range raw.roles {
		for _, it := range r.permissions {
			if !ValidPermission(it.value) {
				continue
			}
			if raw.hasCatalogue {
				if _, ok := slices.BinarySearch(catalogue, it.value); !ok {
					ps.errorf(it.node, "role %q: permission %q is not listed in the top-level permissions", r.name, it.value)
				}
			}
			known = append(known, it.value)
		}
	}
	p.known = sortedSet(known)
	for _, r := range raw.roles {
		for _, it := range r.permissions {
			if ValidPermissionPattern(it.value) && !ValidPermission(it.value) && len(expand(it.value, p.known)) == 0 {
				ps.errorf(it.node, "role %q: %q matches no known permission", r.name, it.value)
			}
		}
	}

	// Role references.
	for _, r := range raw.roles {
		for _, it := range r.inherits {
			target, ok := byName[it.value]
			switch {
			case !ok:
				ps.errorf(it.node, "role %q inherits unknown role %q", r.name, it.value)
			case target.name == r.name:
				ps.errorf(it.node, "role %q inherits itself (inheritance cycle)", r.name)
			case target.levelSet && r.levelSet && target.level > r.level:
				ps.errorf(it.node, "role %q (level %d) inherits %q of higher level %d; a role may inherit only roles at or below its own level", r.name, r.level, target.name, target.level)
			}
		}
		for _, it := range r.assignableBy {
			if _, ok := byName[it.value]; !ok {
				ps.errorf(it.node, "role %q: assignable_by names unknown role %q", r.name, it.value)
			}
		}
	}
	ps.cycles(raw, byName)

	if raw.defaultRole != "" {
		if _, ok := byName[raw.defaultRole]; !ok {
			ps.errorf(raw.defaultRoleNode, "default_role %q is not a role of this policy", raw.defaultRole)
		}
	}
	if len(ps.errs) > 0 {
		return nil
	}

	// Expand permissions (the graph is acyclic and every reference resolves).
	done := map[string]bool{}
	var closure func(def *roleDef) []string
	closure = func(def *roleDef) []string {
		if done[def.name] {
			return def.perms
		}
		lists := [][]string{}
		for _, pat := range def.patterns {
			lists = append(lists, expand(pat, p.known))
		}
		for _, parent := range def.inherits {
			lists = append(lists, closure(p.roles[parent]))
		}
		def.perms = sortedSet(lists...)
		done[def.name] = true
		return def.perms
	}
	for _, def := range p.roles {
		closure(def)
		p.ordered = append(p.ordered, def)
	}
	slices.SortFunc(p.ordered, func(a, b *roleDef) int {
		if a.level != b.level {
			return b.level - a.level
		}
		return strings.Compare(a.name, b.name)
	})

	if raw.defaultRole != "" {
		def := p.roles[raw.defaultRole]
		for _, perm := range def.perms {
			resource, _, _ := strings.Cut(perm, ":")
			if slices.Contains(adminResources, resource) {
				ps.errorf(raw.defaultRoleNode, "default_role %q would give self-registered users the admin permission %q; choose a role without %s:* permissions", raw.defaultRole, perm, resource)
				return nil
			}
		}
	}
	p.defaultRole = raw.defaultRole
	p.mfaLevel, p.mfaSet = raw.mfaLevel, raw.mfaLevel != NoLevel
	return p
}

// cycles reports every inheritance cycle once, naming its path.
func (ps *parser) cycles(raw *rawPolicy, byName map[string]*rawRole) {
	const (
		unvisited = iota
		onStack
		finished
	)
	state := map[string]int{}
	var stack []string
	reported := map[string]bool{}
	var visit func(r *rawRole)
	visit = func(r *rawRole) {
		state[r.name] = onStack
		stack = append(stack, r.name)
		for _, it := range r.inherits {
			next, ok := byName[it.value]
			if !ok || next.name == r.name {
				continue // reported already
			}
			switch state[next.name] {
			case onStack:
				start := slices.Index(stack, next.name)
				cycle := append(slices.Clone(stack[start:]), next.name)
				key := canonicalCycle(cycle[:len(cycle)-1])
				if !reported[key] {
					reported[key] = true
					ps.errorf(it.node, "inheritance cycle: %s", strings.Join(cycle, " -> "))
				}
			case unvisited:
				visit(next)
			}
		}
		stack = stack[:len(stack)-1]
		state[r.name] = finished
	}
	for _, r := range raw.roles {
		if state[r.name] == unvisited {
			visit(r)
		}
	}
}

// canonicalCycle names a cycle independently of where it was entered.
func canonicalCycle(names []string) string {
	members := slices.Clone(names)
	slices.Sort(members)
	return strings.Join(members, ",")
}
