// Package sqlstore is Portcullis's relational store: users, roles, invites,
// one-time user tokens, OAuth clients, signing keys and audit events, kept by
// GORM on PostgreSQL (postgres://) or on an embedded SQLite file (sqlite://),
// with the same code and the same behaviour on both.
//
// The schema is changed only by the versioned migrations in this package
// (Migrate, MigrationStatus), never by AutoMigrate, and two processes
// migrating at once never both apply a migration. Every check-and-set
// (invite acceptance, one-time tokens, signing-key rotation) runs in one
// transaction so that exactly one of many concurrent callers wins.
//
// This package must never log, never return or log a password hash except
// from the GetUser* lookups that login needs, never store a one-time token
// or client secret other than as its hash, and never import server, keys or
// policy.
package sqlstore
