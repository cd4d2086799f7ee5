// Package backchannel delivers OpenID Connect Back-Channel Logout 1.0 logout
// tokens: when a browser session ends, each of its grants whose client has a
// backchannel_logout_uri gets a durable queue entry (store.BackchannelLogout),
// and a Notifier on every instance claims due entries, mints a fresh logout
// token for each attempt (typ logout+jwt, exp two minutes after iat) and
// POSTs it to the client, retrying failures on a bounded backoff schedule and
// auditing each failed attempt as logout.backchannel_failed.
//
// It has one job. It never decides which sessions end or which clients are
// told (the caller enqueues), never follows a redirect, never waits longer
// than its timeout for a client, never gives one client more than its share
// of the deliveries in flight (a client whose endpoint never answers must
// not hold up the others'), never connects an organisation's client's
// delivery to an address that is not public (PublicAddress), and never
// logs, audits or stores a logout token.
package backchannel
