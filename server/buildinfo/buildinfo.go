// Package buildinfo carries the version and commit stamped into the binary at
// link time (see the Makefile's LDFLAGS).
package buildinfo

import "runtime"

// Set by -ldflags at build time.
var (
	// Version is the release version, or "dev".
	Version = "dev"
	// Commit is the short git commit the binary was built from.
	Commit = "unknown"
)

// GoVersion is the Go toolchain that built the binary.
func GoVersion() string { return runtime.Version() }
