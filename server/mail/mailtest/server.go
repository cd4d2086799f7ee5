package mailtest

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// Received is one message as the server accepted it.
type Received struct {
	From     string      // envelope sender (MAIL FROM)
	To       []string    // envelope recipients (RCPT TO)
	Subject  string      // Subject header, RFC 2047 decoded
	Text     string      // decoded text/plain body, line endings as "\n"
	HTML     string      // decoded text/html body, line endings as "\n"
	Header   mail.Header // top-level headers as received
	Raw      []byte      // the message exactly as received (CRLF, un-dot-stuffed)
	TLS      bool        // the session was encrypted (STARTTLS or implicit TLS)
	AuthUser string      // the user that authenticated, "" without AUTH
}

var linkRE = regexp.MustCompile(`https?://[^\s<>"']+`)

// Links returns the http(s) URLs in the text body, in order.
func (r Received) Links() []string {
	return linkRE.FindAllString(r.Text, -1)
}

// Link returns the one link of the text body that carries a token query
// parameter; the test fails if there is none or several different ones.
func (r Received) Link(t testing.TB) string {
	t.Helper()
	var found string
	for _, l := range r.Links() {
		u, err := url.Parse(l)
		if err != nil || u.Query().Get("token") == "" {
			continue
		}
		if found != "" && found != l {
			t.Fatalf("mailtest: message %q holds several token links: %q and %q", r.Subject, found, l)
		}
		found = l
	}
	if found == "" {
		t.Fatalf("mailtest: message %q holds no link with a token; text:\n%s", r.Subject, r.Text)
	}
	return found
}

// Token returns the token query parameter of Link.
func (r Received) Token(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(r.Link(t))
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	return u.Query().Get("token")
}

// Option configures a Server.
type Option func(*config)

type config struct {
	user, pass string
	mechs      []string
	starttls   bool
	implicit   bool
	tlsHosts   []string
	host       string
}

// WithAuth makes the server require AUTH with this user and password before
// MAIL; URL then carries the credentials. AUTH is allowed over plain
// loopback connections.
func WithAuth(user, pass string) Option {
	return func(c *config) { c.user, c.pass = user, pass }
}

// WithAuthMechanisms sets the SASL mechanisms offered with WithAuth
// (default PLAIN and LOGIN).
func WithAuthMechanisms(mechs ...string) Option {
	return func(c *config) { c.mechs = mechs }
}

// WithSTARTTLS makes the server offer STARTTLS with a fresh self-signed
// certificate for localhost, 127.0.0.1, ::1 and extraHosts; ClientTLSConfig
// trusts it.
func WithSTARTTLS(extraHosts ...string) Option {
	return func(c *config) { c.starttls, c.tlsHosts = true, extraHosts }
}

// WithImplicitTLS makes the server speak TLS from the first byte (smtps://),
// with a certificate like WithSTARTTLS's.
func WithImplicitTLS(extraHosts ...string) Option {
	return func(c *config) { c.implicit, c.tlsHosts = true, extraHosts }
}

// WithHost makes the server listen on host (an IP address of this machine)
// instead of 127.0.0.1, so a client reaches it as a host that is not
// loopback; URL then names that address. Give the same host to WithSTARTTLS
// or WithImplicitTLS for the certificate to cover it.
func WithHost(host string) Option {
	return func(c *config) { c.host = host }
}

// Server is an SMTP server on 127.0.0.1 (or WithHost's address) that keeps
// what it receives.
type Server struct {
	cfg       config
	srv       *smtp.Server
	addr      string
	clientTLS *tls.Config

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every new message
	msgs      []Received
	taken     []bool // taken[i]: msgs[i] was returned by WaitFor
	rejected  []error
	attempts  int
	failN     int
	failCode  int
	closed    bool
	closeOnce sync.Once
}

// NewServer starts a server on 127.0.0.1 (or WithHost's address) with a free
// port; it stops when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{changed: make(chan struct{})}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.user != "" && len(s.cfg.mechs) == 0 {
		s.cfg.mechs = []string{sasl.Plain, sasl.Login}
	}
	host := s.cfg.host
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("mailtest: listen: %v", err)
	}
	s.addr = ln.Addr().String()

	srv := smtp.NewServer(backend{s})
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 4 << 20
	srv.MaxRecipients = 50
	srv.ErrorLog = testLogger{s: s, t: t}
	if s.cfg.starttls || s.cfg.implicit {
		serverTLS, clientTLS, err := selfSigned(s.cfg.tlsHosts)
		if err != nil {
			ln.Close()
			t.Fatalf("mailtest: certificate: %v", err)
		}
		s.clientTLS = clientTLS
		if s.cfg.implicit {
			ln = tls.NewListener(ln, serverTLS)
		} else {
			srv.TLSConfig = serverTLS
		}
	}
	s.srv = srv
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; pending sessions are cut.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		_ = s.srv.Close()
	})
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is the PORTCULLIS_SMTP_URL that reaches this server:
// smtp://127.0.0.1:port, smtps://… with WithImplicitTLS, with the
// credentials of WithAuth.
func (s *Server) URL() string {
	u := url.URL{Scheme: "smtp", Host: s.addr}
	if s.cfg.implicit {
		u.Scheme = "smtps"
	}
	if s.cfg.user != "" {
		u.User = url.UserPassword(s.cfg.user, s.cfg.pass)
	}
	return u.String()
}

// ClientTLSConfig is a client configuration that trusts the server's
// certificate (nil without WithSTARTTLS or WithImplicitTLS).
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.clientTLS == nil {
		return nil
	}
	return s.clientTLS.Clone()
}

// FailNext makes the server answer the next n MAIL commands with the SMTP
// reply code (for example 421 for a transient failure, 550 for a permanent
// one) instead of accepting them.
func (s *Server) FailNext(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failCode = n, code
}

// Attempts counts the MAIL commands received, refused ones included.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// Messages returns a copy of every message accepted so far, oldest first.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Received, len(s.msgs))
	copy(out, s.msgs)
	return out
}

// WaitFor returns the oldest message addressed to to (compared by
// store.EmailKey, as the server compares addresses: a Kelvin sign is not a
// "k")
// that no earlier WaitFor returned, waiting up to timeout; the test fails
// when none arrives. Successive calls thus walk through a recipient's
// messages in order.
func (s *Server) WaitFor(t testing.TB, to string, timeout time.Duration) Received {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for i, m := range s.msgs {
			if s.taken[i] {
				continue
			}
			for _, rcpt := range m.To {
				if store.SameEmail(rcpt, to) {
					s.taken[i] = true
					s.mu.Unlock()
					return m
				}
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			s.mu.Lock()
			var got []string
			for _, m := range s.msgs {
				got = append(got, strings.Join(m.To, ",")+": "+m.Subject)
			}
			rejected := errors.Join(s.rejected...)
			s.mu.Unlock()
			t.Fatalf("mailtest: no new message to %s within %s; received: %q; malformed messages refused: %v", to, timeout, got, rejected)
		}
	}
}

func (s *Server) add(r Received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, r)
	s.taken = append(s.taken, false)
	close(s.changed)
	s.changed = make(chan struct{})
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, conn: c}, nil
}

type session struct {
	s    *Server
	conn *smtp.Conn
	user string
	from string
	to   []string
}

var _ smtp.AuthSession = (*session)(nil)

func (se *session) AuthMechanisms() []string {
	if se.s.cfg.user == "" {
		return nil
	}
	return se.s.cfg.mechs
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if se.s.cfg.user == "" {
		return nil, smtp.ErrAuthUnsupported
	}
	offered := false
	for _, m := range se.s.cfg.mechs {
		offered = offered || strings.EqualFold(m, mech)
	}
	if !offered {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	check := func(user, pass string) error {
		okUser := subtle.ConstantTimeCompare([]byte(user), []byte(se.s.cfg.user)) == 1
		okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(se.s.cfg.pass)) == 1
		if !okUser || !okPass {
			return smtp.ErrAuthFailed
		}
		se.user = user
		return nil
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	s := se.s
	s.mu.Lock()
	s.attempts++
	if s.failN > 0 {
		s.failN--
		code := s.failCode
		s.mu.Unlock()
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "mailtest: failure injected by FailNext"}
	}
	s.mu.Unlock()
	if s.cfg.user != "" && se.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	se.from = from
	se.to = nil
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := Parse(raw)
	if err != nil {
		se.s.mu.Lock()
		se.s.rejected = append(se.s.rejected, err)
		se.s.mu.Unlock()
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "mailtest: malformed message: " + err.Error()}
	}
	msg.From = se.from
	msg.To = append([]string(nil), se.to...)
	_, msg.TLS = se.conn.TLSConnectionState()
	msg.AuthUser = se.user
	se.s.add(msg)
	return nil
}

func (se *session) Reset() {
	se.from = ""
	se.to = nil
}

func (se *session) Logout() error { return nil }

// loginServer is the server side of the LOGIN mechanism.
type loginServer struct {
	check func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if response != nil { // initial response carries the user name
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.check(l.user, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}

// Parse decodes a raw RFC 5322 message: the RFC 2047 subject and the first
// text/plain and text/html bodies, whatever the multipart nesting and
// transfer encoding (7bit, 8bit, quoted-printable, base64).
func Parse(raw []byte) (Received, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Received{}, fmt.Errorf("read message: %w", err)
	}
	r := Received{Header: m.Header, Raw: raw}
	if r.Subject, err = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); err != nil {
		return Received{}, fmt.Errorf("decode subject: %w", err)
	}
	if err := walk(m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), m.Body, &r, 0); err != nil {
		return Received{}, err
	}
	return r, nil
}

func walk(ctype, cte string, body io.Reader, r *Received, depth int) error {
	if depth > 10 {
		return errors.New("multipart nesting too deep")
	}
	if ctype == "" {
		ctype = "text/plain; charset=us-ascii"
	}
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return fmt.Errorf("content type %q: %w", ctype, err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		if params["boundary"] == "" {
			return fmt.Errorf("%s without boundary", mt)
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart() // decodes quoted-printable itself
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", mt, err)
			}
			if err := walk(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p, r, depth+1); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "", "7bit", "8bit", "binary":
	default:
		return fmt.Errorf("unknown transfer encoding %q", cte)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("%s body: %w", mt, err)
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	switch {
	case mt == "text/plain" && r.Text == "":
		r.Text = text
	case mt == "text/html" && r.HTML == "":
		r.HTML = text
	}
	return nil
}

// selfSigned makes a short-lived certificate for loopback and hosts
// (testservers.SelfSigned) and the server's and a client's TLS
// configurations for it.
func selfSigned(hosts []string) (server, client *tls.Config, err error) {
	certPEM, keyPEM, roots, err := testservers.SelfSigned(hosts...)
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

// testLogger sends go-smtp's server errors to the test log while the test
// runs.
type testLogger struct {
	s *Server
	t testing.TB
}

func (l testLogger) Printf(format string, v ...any) { l.log(fmt.Sprintf(format, v...)) }
func (l testLogger) Println(v ...any)               { l.log(fmt.Sprintln(v...)) }

func (l testLogger) log(line string) {
	// Logging under the lock that Close takes keeps every line inside the
	// test's lifetime.
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if !l.s.closed {
		l.t.Logf("mailtest server: %s", strings.TrimSpace(line))
	}
}
