// Package mailtest runs a real SMTP server on loopback inside a test, so
// suites that send email (invites, password resets, verification, browser
// pages) can receive it and follow its links.
//
//	srv := mailtest.NewServer(t)
//	// configure Portcullis with PORTCULLIS_SMTP_URL=srv.URL()
//	got := srv.WaitFor(t, "alice@example.com", 5*time.Second)
//	token := got.Token(t)
//
// It is built on github.com/emersion/go-smtp's server and parses what it
// receives as MIME, so Text and HTML are decoded bodies. It is for tests only:
// it must never be imported by production code, and it keeps every message in
// memory.
package mailtest
