// Package policy is Portcullis's pure authorization policy: roles with levels, permissions with
// wildcards, role inheritance, the privilege ceiling, and the resolution of OAuth scopes into the
// concrete permissions a token carries.
//
// A policy is loaded from YAML (Load, Parse) or is the built-in Default (super_admin > admin > user).
// A loaded *Policy is immutable and safe for concurrent use; every accessor returns copies.
//
// # Policy file format
//
//	version: 1                  # optional; only 1 exists
//	default_role: viewer        # optional; the role self-registered users get
//	permissions:                # optional catalogue; when present every concrete permission a role
//	  - projects:read           # names must be listed here (the admin permissions always are)
//	  - projects:write
//	roles:
//	  super_admin:
//	    level: 100              # required integer >= 0; higher is more privileged
//	    description: Everything
//	    permissions: ["*"]      # "*" must be quoted: a bare * starts a YAML alias
//	    assignable_by: [super_admin]
//	  editor:
//	    level: 20
//	    inherits: [viewer]      # gets every permission of viewer (transitively)
//	    permissions: [projects:write]
//	  viewer:
//	    level: 10
//	    permissions: [projects:read]
//
// Permissions are resource:action, each part made of lower-case letters, digits, '_', '-' and '.',
// starting with a letter or digit. "resource:*" names every known permission of that resource and "*"
// names every known permission. The known permissions are every permission the policy mentions plus
// AdminPermissions; wildcards are expanded against them, so Permissions never returns a wildcard.
//
// Validation (errors name the file, line and column, see ParseError): unknown fields, duplicate
// roles, malformed role names and permissions, a wildcard that matches no known permission, an
// unknown role in inherits, assignable_by or default_role, an inheritance cycle, a role inheriting
// a role of a higher level (that would smuggle privileges past the hierarchy), and a default_role that
// would hand self-registered users an admin permission. Two roles may share a level: they are peers,
// and neither is strictly below the other, so neither can assign or manage the other by level alone.
//
// # Privilege ceiling
//
// CanAssign, CanChangeRole and CanManage are the only places that decide whether one person may act
// on a role or on another person. An actor may assign (grant, revoke, invite with) a role only if it
// is strictly below the actor's highest role, or the role's assignable_by names one of the actor's
// roles. An actor manages (deactivates, resets, deletes…) only users whose highest role is strictly
// below the actor's, and never themself.
//
// This package must never import the store, server or keys packages, GORM or Redis, must never do
// I/O other than reading the policy file in Load, and must never log: it returns typed errors and
// the caller decides what to show and what to record.
package policy
