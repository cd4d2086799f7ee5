package policy

import (
	_ "embed"
	"sync"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultSource is the Source of the built-in policy.
const DefaultSource = "built-in"

var defaultPolicy = sync.OnceValue(func() *Policy {
	p, err := Parse(DefaultSource, defaultYAML)
	if err != nil {
		// The embedded policy is tested; failing here is a build defect, not a runtime condition.
		panic("policy: built-in policy is invalid: " + err.Error())
	}
	return p
})

// Default returns the built-in policy: super_admin (level 100, every permission, assignable by
// super_admin) > admin (level 50: users:read, users:write, users:invite, roles:read, roles:assign,
// clients:read, clients:write, keys:read, audit:read) > user (level 10, no permission; the
// default_role). keys:rotate is for super_admin only. The returned policy is shared and immutable.
func Default() *Policy { return defaultPolicy() }

// DefaultYAML returns the built-in policy as YAML, a starting point for a policy file.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }
