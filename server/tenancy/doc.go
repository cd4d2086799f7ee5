// Package tenancy holds the rules of organisations (PORTCULLIS_TENANTS=on)
// that the token and accounts services share: which roles a user holds in a
// login that names a tenant or none, and what a tenant slug may look like.
//
// It decides; it never issues tokens, writes audit events or knows HTTP.
// When organisations are off, nothing calls it.
package tenancy
