// Package storetest holds the conformance suites every store backend runs:
// one set of named subtests per interface, so a behaviour the suite pins holds
// on every backend (the relational store on PostgreSQL and SQLite, the token
// state on Redis and SQL). A backend's test file calls the Run… function with
// a constructor that gives each subtest a fresh, empty instance.
//
// The suites drive time through the requests they make (RotateRequest.Now,
// Hit's now, cut-offs), so they never sleep to wait for an expiry.
//
// This package is imported only by tests. It must never be imported by
// product code, never mock what a backend stores, and never skip a case.
package storetest
