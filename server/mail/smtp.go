package mail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Defaults of Options.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultAttempts = 3
	DefaultBackoff  = 200 * time.Millisecond
)

// Options tunes an SMTPSender. The zero value gives the defaults.
type Options struct {
	// Timeout bounds one delivery attempt: dial, TLS, every command and the
	// upload of the message. Default 10s.
	Timeout time.Duration
	// Retries is the total number of attempts, the first included (default
	// 3; 1 means never retry). Only transient failures are retried: network
	// errors, timeouts and 4xx replies; never a 5xx reply, a TLS certificate
	// error or an invalid message.
	Retries int
	// Backoff is the wait before the second attempt, doubled before each
	// further one (200ms, 400ms, ...). Default 200ms.
	Backoff time.Duration
	// TLSConfig is used for STARTTLS and smtps:// (cloned; ServerName
	// defaults to the URL's host). Nil means the system roots.
	TLSConfig *tls.Config
	// HelloName is the name given in EHLO. Default "localhost".
	HelloName string
	// Now is the clock for the Date header. Default time.Now.
	Now func() time.Time
}

// SMTPSender delivers messages over SMTP. It is safe for concurrent use;
// every Send opens its own connection.
type SMTPSender struct {
	host        string // host name or IP, without port
	addr        string // host:port
	implicitTLS bool
	// plaintextOK (smtp+insecure://) lets a session to a non-loopback host
	// go on without TLS when the server offers no STARTTLS.
	plaintextOK bool
	user, pass  string
	hasAuth     bool
	from        *mail.Address
	opts        Options

	// dialContext opens the TCP connection; tests replace it to route a
	// non-loopback host name to a loopback server.
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender returns a sender for rawURL, with from (for example
// "Portcullis <no-reply@example.com>") as the sender. rawURL is one of
//
//   - smtp://[user:pass@]host[:port]: port 587 by default; STARTTLS whenever
//     the server offers it, and a non-loopback server that offers none is
//     refused (nothing is sent);
//   - smtps://[user:pass@]host[:port]: port 465 by default; implicit TLS;
//   - smtp+insecure://host[:port]: like smtp://, but a server that offers no
//     STARTTLS is used in plain text. It takes no credentials unless the
//     host is loopback: they would cross the network readable.
//
// Whatever the scheme, credentials never go to a non-loopback host over a
// connection without TLS. Errors never contain the password.
func NewSMTPSender(rawURL, from string, opts Options) (*SMTPSender, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url's own error quotes the whole URL, password included.
		return nil, errors.New("smtp url: not a URL of the form smtp://[user:pass@]host:port")
	}
	s := &SMTPSender{}
	var defaultPort string
	switch u.Scheme {
	case "smtp":
		defaultPort = "587"
	case "smtp+insecure":
		defaultPort = "587"
		s.plaintextOK = true
	case "smtps":
		defaultPort = "465"
		s.implicitTLS = true
	default:
		return nil, errors.New("smtp url: scheme must be smtp, smtps or smtp+insecure")
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("smtp url: only smtp[s]://[user:pass@]host:port is accepted (no path, query or fragment)")
	}
	s.host = u.Hostname()
	if s.host == "" {
		return nil, errors.New("smtp url: missing host")
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	s.addr = net.JoinHostPort(s.host, port)
	if u.User != nil {
		s.user = u.User.Username()
		s.pass, _ = u.User.Password()
		if s.user == "" || s.pass == "" {
			return nil, errors.New("smtp url: credentials need both a user and a password")
		}
		s.hasAuth = true
		if s.plaintextOK && !isLoopback(s.host) {
			return nil, errors.New("smtp url: smtp+insecure:// takes no credentials for a host that is not loopback " +
				"(they could be sent without TLS); use smtp:// (STARTTLS) or smtps://")
		}
	}
	if s.from, err = parseFrom(from); err != nil {
		return nil, err
	}
	if opts.Timeout < 0 || opts.Retries < 0 || opts.Backoff < 0 {
		return nil, errors.New("smtp options: timeout, retries and backoff must not be negative")
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultAttempts
	}
	if opts.Backoff == 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.HelloName == "" {
		opts.HelloName = "localhost"
	}
	if strings.ContainsAny(opts.HelloName, "\r\n ") {
		return nil, errors.New("smtp options: invalid hello name")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s.opts = opts
	d := &net.Dialer{}
	s.dialContext = d.DialContext
	return s, nil
}

// String describes the sender without its credentials.
func (s *SMTPSender) String() string {
	scheme := "smtp"
	switch {
	case s.implicitTLS:
		scheme = "smtps"
	case s.plaintextOK:
		scheme = "smtp+insecure"
	}
	return scheme + "://" + s.addr
}

// Send delivers msg, retrying transient failures with exponential backoff.
// It gives up at once when ctx ends. The error says which step failed; it
// never holds the password or the body.
func (s *SMTPSender) Send(ctx context.Context, msg Message) error {
	to, err := checkMessage(msg)
	if err != nil {
		return err
	}
	id, err := newMessageID(s.from)
	if err != nil {
		return err
	}
	// The same bytes (and Message-ID) on every attempt, so a duplicate caused
	// by a lost final reply can be recognised by the receiving side.
	data, err := build(s.from, to, msg, s.opts.Now(), id)
	if err != nil {
		return err
	}

	backoff := s.opts.Backoff
	for attempt := 1; ; attempt++ {
		err = s.attempt(ctx, to.Address, data)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !transient(err) || attempt >= s.opts.Retries {
			return fmt.Errorf("send mail via %s (attempt %d of %d): %w", s, attempt, s.opts.Retries, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("send mail via %s (attempt %d of %d, then %w): %w", s, attempt, s.opts.Retries, ctx.Err(), err)
		case <-t.C:
		}
		backoff *= 2
	}
}

// errNoTLSForAuth is returned instead of sending credentials in clear.
var errNoTLSForAuth = errors.New("the server offers no STARTTLS and the host is not loopback: refusing to send credentials without TLS (use smtps:// or a server with STARTTLS)")

// errNoSTARTTLS is returned instead of sending a message in clear to a
// server that is not loopback.
var errNoSTARTTLS = errors.New("the server offers no STARTTLS and the host is not loopback: refusing to send mail without TLS " +
	"(use smtps://, a server with STARTTLS, or smtp+insecure:// to accept plain text on purpose)")

// checkPlaintext is the one rule for a session that ended up without TLS
// (the server offered no STARTTLS): allowed to a loopback host; otherwise
// never with credentials, and without them only under smtp+insecure://.
// It runs after EHLO and before AUTH or MAIL, so a refused session sends
// neither credentials nor any part of the message.
func (s *SMTPSender) checkPlaintext(isTLS bool) error {
	switch {
	case isTLS || isLoopback(s.host):
		return nil
	case s.hasAuth:
		return permanentError{errNoTLSForAuth}
	case !s.plaintextOK:
		return permanentError{errNoSTARTTLS}
	}
	return nil
}

// permanentError marks failures that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// attempt performs one SMTP session within s.opts.Timeout.
func (s *SMTPSender) attempt(parent context.Context, rcpt string, data []byte) (err error) {
	ctx, cancel := context.WithTimeout(parent, s.opts.Timeout)
	defer cancel()
	step := "dial"
	defer func() {
		switch {
		case err == nil:
		case ctx.Err() != nil:
			// A blocked read or write is ended by closing the connection;
			// report that as the timeout (or cancellation) it really is.
			err = fmt.Errorf("%s: %w (attempt limit %s)", step, ctx.Err(), s.opts.Timeout)
		default:
			err = fmt.Errorf("%s: %w", step, err)
		}
	}()

	tlsConfig := s.tlsConfig()
	conn, err := s.dialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	if s.implicitTLS {
		step = "tls handshake"
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	// Closing the connection when ctx ends unblocks every read and write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	step = "greeting"
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return err
	}
	defer c.Close()
	step = "ehlo"
	if err := c.Hello(s.opts.HelloName); err != nil {
		return err
	}
	_, isTLS := c.TLSConnectionState()
	if !isTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			step = "starttls"
			if err := c.StartTLS(tlsConfig); err != nil {
				return err
			}
			isTLS = true
		}
	}
	step = "starttls"
	if err := s.checkPlaintext(isTLS); err != nil {
		return err
	}
	if s.hasAuth {
		step = "auth"
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return permanentError{errors.New("credentials are configured but the server offers no AUTH")}
		}
		a, err := pickAuth(mechs, s.user, s.pass)
		if err != nil {
			return permanentError{err}
		}
		if err := c.Auth(a); err != nil {
			return err
		}
	}
	step = "mail from"
	if err := c.Mail(s.from.Address); err != nil {
		return err
	}
	step = "rcpt to"
	if err := c.Rcpt(rcpt); err != nil {
		return err
	}
	step = "data"
	w, err := c.Data()
	if err != nil {
		return err
	}
	step = "data: writing the message"
	if _, err := w.Write(data); err != nil {
		return err
	}
	step = "data: end of message"
	if err := w.Close(); err != nil {
		return err
	}
	// The message is accepted; a failed QUIT does not change that.
	_ = c.Quit()
	return nil
}

func (s *SMTPSender) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if s.opts.TLSConfig != nil {
		cfg = s.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = s.host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

// transient reports whether a failed attempt may succeed if tried again.
func transient(err error) bool {
	var perm permanentError
	if errors.As(err, &perm) {
		return false
	}
	var tpErr *textproto.Error
	if errors.As(err, &tpErr) {
		return tpErr.Code >= 400 && tpErr.Code < 500
	}
	// A certificate the client does not trust, or a server that does not speak
	// TLS, is a configuration problem.
	var certErr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var invErr x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	var alertErr tls.AlertError
	if errors.As(err, &certErr) || errors.As(err, &hostErr) || errors.As(err, &authErr) ||
		errors.As(err, &invErr) || errors.As(err, &recErr) || errors.As(err, &alertErr) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// isLoopback reports whether host (a name or an IP literal) is this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pickAuth chooses PLAIN, else LOGIN, among the mechanisms the server offers.
func pickAuth(offered, user, pass string) (smtp.Auth, error) {
	var plain, login bool
	for _, m := range strings.Fields(offered) {
		switch strings.ToUpper(m) {
		case "PLAIN":
			plain = true
		case "LOGIN":
			login = true
		}
	}
	switch {
	case plain:
		return &plainAuth{user: user, pass: pass}, nil
	case login:
		return &loginAuth{user: user, pass: pass}, nil
	}
	return nil, fmt.Errorf("the server offers neither PLAIN nor LOGIN (offered: %q)", offered)
}

// plainAuth is SASL PLAIN (RFC 4616). Unlike net/smtp.PlainAuth it leaves
// the decision about TLS to attempt, which also accepts every loopback IP.
type plainAuth struct{ user, pass string }

func (a *plainAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a *plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge after PLAIN")
	}
	return nil, nil
}

// loginAuth is the LOGIN mechanism (draft-murchison-sasl-login) that some
// providers offer instead of PLAIN.
type loginAuth struct {
	user, pass string
	step       int
}

func (a *loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(_ []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.user), nil
	case 2:
		return []byte(a.pass), nil
	}
	return nil, errors.New("unexpected server challenge after LOGIN")
}
