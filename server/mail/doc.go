// Package mail delivers Portcullis's account emails: invitations, password
// resets and email verifications.
//
// A Sender delivers a Message. SMTPSender speaks SMTP (smtp:// with STARTTLS,
// required off loopback; smtps:// with implicit TLS; smtp+insecure:// when a
// server without STARTTLS is accepted on purpose), bounds every
// attempt with a timeout and retries only transient failures (network errors
// and 4xx replies). LogSender is used when no PORTCULLIS_SMTP_URL is set: it
// writes the whole message, link included, to the log at WARN marked
// "not sent", so a message is never dropped silently. Templates renders the
// three messages as plain text and HTML from embedded templates, and Link
// builds the one-time links they carry.
//
// This package must never put the SMTP password or a message body in an
// error, never send SMTP credentials in clear to a host that is not loopback,
// never send a message in clear to such a host unless the URL says
// smtp+insecure://,
// never let a header be injected (CR or LF in a recipient or subject is
// refused) and never emit unescaped data into HTML. LogSender is the one
// deliberate place where a one-time link reaches the log; nothing else here
// logs a link or a token.
package mail
