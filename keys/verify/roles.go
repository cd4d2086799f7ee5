package verify

import (
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// RoleLevels is a role hierarchy: each role's level, higher being more
// privileged, as in a Portcullis policy file. With it, Role("admin") is met
// by admin and by every role of a higher level. Roles absent from it match
// only exactly.
type RoleLevels map[string]int

// AtLeast reports whether held includes role or, when role has a level, a
// role of an equal or higher level. Two roles sharing a level are peers:
// each satisfies the other.
func (l RoleLevels) AtLeast(held []string, role string) bool {
	if contains(held, role) {
		return true
	}
	want, ok := l[role]
	if !ok {
		return false
	}
	for _, r := range held {
		if lvl, ok := l[r]; ok && lvl >= want {
			return true
		}
	}
	return false
}

// ParseRoleLevels reads the role levels of a Portcullis policy file
// (roles.<name>.level), ignoring everything else in it.
func ParseRoleLevels(policyYAML []byte) (RoleLevels, error) {
	var doc struct {
		Roles map[string]struct {
			Level *int `yaml:"level"`
		} `yaml:"roles"`
	}
	if err := yaml.Unmarshal(policyYAML, &doc); err != nil {
		return nil, fmt.Errorf("role levels: %w", err)
	}
	if len(doc.Roles) == 0 {
		return nil, errors.New("role levels: the policy names no roles")
	}
	out := make(RoleLevels, len(doc.Roles))
	for name, r := range doc.Roles {
		if r.Level == nil || *r.Level < 0 {
			return nil, fmt.Errorf("role levels: role %q needs a level >= 0", name)
		}
		out[name] = *r.Level
	}
	return out, nil
}

// LoadRoleLevels reads the role levels of the policy file at path.
func LoadRoleLevels(path string) (RoleLevels, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("role levels: %w", err)
	}
	return ParseRoleLevels(data)
}
