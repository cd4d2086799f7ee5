package mail_test

import (
	"bytes"
	"context"
	"errors"
	"html"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
)

const (
	from      = "Portcullis <no-reply@portcullis.test>"
	publicURL = "https://id.example.com"
	// A token with characters that need escaping in a query.
	token = "tok+en/with=chars&more_-~"
)

func newSender(t *testing.T, rawURL string, opts mail.Options) *mail.SMTPSender {
	t.Helper()
	s, err := mail.NewSMTPSender(rawURL, from, opts)
	if err != nil {
		t.Fatalf("NewSMTPSender(%q): %v", rawURL, err)
	}
	return s
}

func newTemplates(t *testing.T) *mail.Templates {
	t.Helper()
	tpl, err := mail.NewTemplates()
	if err != nil {
		t.Fatalf("NewTemplates: %v", err)
	}
	return tpl
}

// TestTemplatesDeliveredOverSMTP sends each template through a real SMTP
// server and reads it back: the link arrives intact in both parts.
func TestTemplatesDeliveredOverSMTP(t *testing.T) {
	tpl := newTemplates(t)
	srv := mailtest.NewServer(t)
	sender := newSender(t, srv.URL(), mail.Options{Timeout: 5 * time.Second})

	cases := []struct {
		name    string
		to      string
		link    string
		render  func(link, to string) (mail.Message, error)
		subject string
		want    []string // in the text part
	}{
		{
			name: "ok/invite", to: "alice@example.com", link: mail.Link(publicURL, mail.InvitePath, token),
			render: func(link, to string) (mail.Message, error) {
				return tpl.Invite(mail.InviteData{ProductName: "Acme ID", To: to, Link: link, Role: "admin", ExpiresIn: 48 * time.Hour})
			},
			subject: "You are invited to Acme ID",
			want:    []string{"Acme ID", `"admin"`, "48 hours"},
		},
		{
			name: "ok/reset", to: "bob@example.com", link: mail.Link(publicURL, mail.ResetPasswordPath, token),
			render: func(link, to string) (mail.Message, error) {
				return tpl.PasswordReset(mail.ResetData{ProductName: "Acme ID", To: to, Link: link, ExpiresIn: time.Hour})
			},
			subject: "Reset your Acme ID password",
			want:    []string{"bob@example.com", "1 hour", "If you did not ask for this, ignore this email"},
		},
		{
			name: "ok/verify", to: "carol@example.com", link: mail.Link(publicURL, mail.VerifyEmailPath, token),
			render: func(link, to string) (mail.Message, error) {
				return tpl.VerifyEmail(mail.VerifyData{To: to, Link: link, ExpiresIn: 90 * time.Minute})
			},
			subject: "Confirm your email address for Portcullis",
			want:    []string{"carol@example.com", "1 hour 30 minutes"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := tc.render(tc.link, tc.to)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if err := sender.Send(context.Background(), msg); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.WaitFor(t, tc.to, 5*time.Second)
			if got.Subject != tc.subject {
				t.Errorf("subject = %q, want %q", got.Subject, tc.subject)
			}
			if got.From != "no-reply@portcullis.test" || len(got.To) != 1 || got.To[0] != tc.to {
				t.Errorf("envelope = %q -> %q", got.From, got.To)
			}
			if got.Link(t) != tc.link {
				t.Errorf("text link = %q, want %q", got.Link(t), tc.link)
			}
			if got.Token(t) != token {
				t.Errorf("token = %q, want %q", got.Token(t), token)
			}
			if !strings.Contains(html.UnescapeString(got.HTML), `href="`+tc.link+`"`) {
				t.Errorf("html part lacks href to %q:\n%s", tc.link, got.HTML)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Text, w) {
					t.Errorf("text part lacks %q:\n%s", w, got.Text)
				}
			}
			checkWireFormat(t, got)
		})
	}
}

// checkWireFormat checks the raw message: CRLF only, short lines, the
// required headers, a multipart/alternative body.
func checkWireFormat(t *testing.T, got mailtest.Received) {
	t.Helper()
	raw := string(got.Raw)
	if strings.Contains(strings.ReplaceAll(raw, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(raw, "\r\n", ""), "\r") {
		t.Errorf("message has a bare CR or LF")
	}
	for i, line := range strings.Split(raw, "\r\n") {
		if len(line) > 78 {
			t.Errorf("line %d is %d characters long: %q", i+1, len(line), line)
		}
	}
	for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"} {
		if got.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	if _, err := got.Header.Date(); err != nil {
		t.Errorf("Date header: %v", err)
	}
	if id := got.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@portcullis.test>") {
		t.Errorf("Message-ID = %q", id)
	}
	if ct := got.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative; boundary=") {
		t.Errorf("Content-Type = %q", ct)
	}
	if got.Header.Get("Mime-Version") != "1.0" {
		t.Errorf("MIME-Version = %q", got.Header.Get("Mime-Version"))
	}
}

func TestMessageEncoding(t *testing.T) {
	srv := mailtest.NewServer(t)
	date := time.Date(2030, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))
	sender := newSender(t, srv.URL(), mail.Options{Now: func() time.Time { return date }})

	msg := mail.Message{
		To:      "Zoë Ünicode <zoe@example.com>",
		Subject: "Réinitialisez votre mot de passe — un sujet assez long pour être replié sur plusieurs lignes ✓",
		Text:    "first line\n.starts with a dot\n..two dots\n.\nend\n" + strings.Repeat("x", 200) + "\n",
		HTML:    "<p>é</p>",
	}
	if err := sender.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.WaitFor(t, "zoe@example.com", 5*time.Second)
	if got.Subject != msg.Subject {
		t.Errorf("subject = %q, want %q", got.Subject, msg.Subject)
	}
	if !strings.Contains(got.Header.Get("Subject"), "=?utf-8?q?") {
		t.Errorf("subject not RFC 2047 encoded: %q", got.Header.Get("Subject"))
	}
	if got.Text != msg.Text {
		t.Errorf("text = %q, want %q (dot-stuffing or line endings broken)", got.Text, msg.Text)
	}
	if got.HTML != msg.HTML {
		t.Errorf("html = %q", got.HTML)
	}
	if d, err := got.Header.Date(); err != nil || !d.Equal(date) {
		t.Errorf("Date = %v (%v), want %v", d, err, date)
	}
	to, err := got.Header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Name != "Zoë Ünicode" || to[0].Address != "zoe@example.com" {
		t.Errorf("To header = %q (%v)", got.Header.Get("To"), err)
	}
	fromHdr, err := got.Header.AddressList("From")
	if err != nil || len(fromHdr) != 1 || fromHdr[0].Name != "Portcullis" {
		t.Errorf("From header = %q (%v)", got.Header.Get("From"), err)
	}
	checkWireFormat(t, got)

	// A text-only message is a single text/plain part.
	if err := sender.Send(context.Background(), mail.Message{To: "plain@example.com", Subject: "s", Text: "only text"}); err != nil {
		t.Fatalf("Send text only: %v", err)
	}
	plain := srv.WaitFor(t, "plain@example.com", 5*time.Second)
	if plain.Text != "only text\n" || plain.HTML != "" || !strings.HasPrefix(plain.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("text-only message: type %q text %q html %q", plain.Header.Get("Content-Type"), plain.Text, plain.HTML)
	}
}

func TestInvalidMessagesRefused(t *testing.T) {
	srv := mailtest.NewServer(t)
	sender := newSender(t, srv.URL(), mail.Options{})
	var logBuf bytes.Buffer
	logSender := mail.NewLogSender(newJSONLogger(&logBuf))
	ok := mail.Message{To: "a@example.com", Subject: "Hello", Text: "body"}

	cases := []struct {
		name   string
		change func(m *mail.Message)
	}{
		{"fail/CRLF in subject", func(m *mail.Message) { m.Subject = "Hello\r\nBcc: victim@example.com" }},
		{"fail/LF in subject", func(m *mail.Message) { m.Subject = "Hello\nBcc: victim@example.com" }},
		{"fail/CR in subject", func(m *mail.Message) { m.Subject = "Hello\rX" }},
		{"fail/CRLF in to", func(m *mail.Message) { m.To = "a@example.com\r\nBcc: victim@example.com" }},
		{"fail/LF in to", func(m *mail.Message) { m.To = "a@example.com\nX: y" }},
		{"fail/not an address", func(m *mail.Message) { m.To = "not an address" }},
		{"fail/two addresses", func(m *mail.Message) { m.To = "a@example.com, b@example.com" }},
		{"fail/no recipient", func(m *mail.Message) { m.To = "" }},
		{"fail/empty subject", func(m *mail.Message) { m.Subject = " " }},
		{"fail/empty body", func(m *mail.Message) { m.Text = "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := ok
			tc.change(&m)
			if err := sender.Send(context.Background(), m); !errors.Is(err, mail.ErrInvalidMessage) {
				t.Errorf("SMTPSender.Send: err = %v, want ErrInvalidMessage", err)
			}
			if err := logSender.Send(context.Background(), m); !errors.Is(err, mail.ErrInvalidMessage) {
				t.Errorf("LogSender.Send: err = %v, want ErrInvalidMessage", err)
			}
		})
	}
	if n := srv.Attempts(); n != 0 {
		t.Errorf("server saw %d MAIL commands for invalid messages", n)
	}
	if strings.Contains(logBuf.String(), "victim") {
		t.Errorf("an invalid message reached the log: %s", logBuf.String())
	}
	// The valid message still goes through.
	if err := sender.Send(context.Background(), ok); err != nil {
		t.Fatalf("valid message: %v", err)
	}
	srv.WaitFor(t, "a@example.com", 5*time.Second)
}

func TestAuthAndTLS(t *testing.T) {
	const user, pass = "mailer", "s3cret-Pa55:@/word"
	cases := []struct {
		name     string
		opts     []mailtest.Option
		trust    bool
		wantTLS  bool
		wantUser string
	}{
		{"ok/no auth plain loopback", nil, false, false, ""},
		{"ok/AUTH PLAIN over plain loopback", []mailtest.Option{mailtest.WithAuth(user, pass)}, false, false, user},
		{"ok/AUTH LOGIN over plain loopback", []mailtest.Option{mailtest.WithAuth(user, pass), mailtest.WithAuthMechanisms("LOGIN")}, false, false, user},
		{"ok/STARTTLS used when offered", []mailtest.Option{mailtest.WithSTARTTLS()}, true, true, ""},
		{"ok/STARTTLS then AUTH", []mailtest.Option{mailtest.WithSTARTTLS(), mailtest.WithAuth(user, pass)}, true, true, user},
		{"ok/smtps implicit TLS with AUTH", []mailtest.Option{mailtest.WithImplicitTLS(), mailtest.WithAuth(user, pass)}, true, true, user},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailtest.NewServer(t, tc.opts...)
			opts := mail.Options{}
			if tc.trust {
				opts.TLSConfig = srv.ClientTLSConfig()
			}
			sender := newSender(t, srv.URL(), opts)
			if err := sender.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "s", Text: "t"}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.WaitFor(t, "a@example.com", 5*time.Second)
			if got.TLS != tc.wantTLS || got.AuthUser != tc.wantUser {
				t.Errorf("session TLS=%v user=%q, want TLS=%v user=%q", got.TLS, got.AuthUser, tc.wantTLS, tc.wantUser)
			}
		})
	}
}

// TestPermanentFailuresNotRetried uses a long backoff: a retry would make
// Send take at least that long.
func TestPermanentFailuresNotRetried(t *testing.T) {
	const user, pass = "mailer", "correct-horse"
	const wrongPass = "hunter2-wrong"
	msg := mail.Message{To: "a@example.com", Subject: "s", Text: "the secret body"}
	cases := []struct {
		name    string
		opts    []mailtest.Option
		url     func(srv *mailtest.Server) string
		inject  int // FailNext code
		wantErr string
	}{
		{"fail/550 on MAIL", nil, (*mailtest.Server).URL, 550, "550"},
		{"fail/wrong password", []mailtest.Option{mailtest.WithAuth(user, pass)}, func(srv *mailtest.Server) string {
			return "smtp://" + user + ":" + wrongPass + "@" + srv.Addr()
		}, 0, "535"},
		{"fail/auth required but no credentials", []mailtest.Option{mailtest.WithAuth(user, pass)}, func(srv *mailtest.Server) string {
			return "smtp://" + srv.Addr()
		}, 0, "530"},
		{"fail/credentials but server offers no AUTH", nil, func(srv *mailtest.Server) string {
			return "smtp://" + user + ":" + wrongPass + "@" + srv.Addr()
		}, 0, "offers no AUTH"},
		{"fail/untrusted certificate on STARTTLS", []mailtest.Option{mailtest.WithSTARTTLS()}, (*mailtest.Server).URL, 0, "certificate"},
		{"fail/untrusted certificate on smtps", []mailtest.Option{mailtest.WithImplicitTLS()}, (*mailtest.Server).URL, 0, "certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailtest.NewServer(t, tc.opts...)
			if tc.inject != 0 {
				srv.FailNext(1, tc.inject)
			}
			opts := mail.Options{Backoff: 5 * time.Second, Timeout: 2 * time.Second}
			sender := newSender(t, tc.url(srv), opts)
			start := time.Now()
			err := sender.Send(context.Background(), msg)
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			if elapsed >= opts.Backoff {
				t.Errorf("took %s: a permanent failure was retried", elapsed)
			}
			if n := srv.Attempts(); n > 1 {
				t.Errorf("%d MAIL commands, want at most 1", n)
			}
			if len(srv.Messages()) != 0 {
				t.Errorf("a message was delivered")
			}
			for _, secret := range []string{pass, wrongPass, "the secret body"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks %q: %v", secret, err)
				}
			}
		})
	}
}

func TestTransientFailuresRetried(t *testing.T) {
	msg := mail.Message{To: "a@example.com", Subject: "s", Text: "t"}
	t.Run("ok/421 then success", func(t *testing.T) {
		srv := mailtest.NewServer(t)
		srv.FailNext(1, 421)
		sender := newSender(t, srv.URL(), mail.Options{})
		start := time.Now()
		if err := sender.Send(context.Background(), msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if elapsed := time.Since(start); elapsed < mail.DefaultBackoff {
			t.Errorf("retried after %s, want the %s backoff", elapsed, mail.DefaultBackoff)
		}
		if n := srv.Attempts(); n != 2 {
			t.Errorf("%d MAIL commands, want 2", n)
		}
		if n := len(srv.Messages()); n != 1 {
			t.Errorf("%d messages delivered, want 1", n)
		}
	})
	t.Run("ok/451 twice then success within 3 attempts", func(t *testing.T) {
		srv := mailtest.NewServer(t)
		srv.FailNext(2, 451)
		sender := newSender(t, srv.URL(), mail.Options{Backoff: 10 * time.Millisecond})
		if err := sender.Send(context.Background(), msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if n := srv.Attempts(); n != 3 {
			t.Errorf("%d MAIL commands, want 3", n)
		}
	})
	t.Run("fail/421 on every attempt", func(t *testing.T) {
		srv := mailtest.NewServer(t)
		srv.FailNext(10, 421)
		sender := newSender(t, srv.URL(), mail.Options{Retries: 3, Backoff: 10 * time.Millisecond})
		err := sender.Send(context.Background(), msg)
		if err == nil || !strings.Contains(err.Error(), "421") || !strings.Contains(err.Error(), "attempt 3 of 3") {
			t.Errorf("err = %v, want a 421 after 3 attempts", err)
		}
		if n := srv.Attempts(); n != 3 {
			t.Errorf("%d MAIL commands, want 3", n)
		}
	})
	t.Run("fail/Retries 1 means one attempt", func(t *testing.T) {
		srv := mailtest.NewServer(t)
		srv.FailNext(1, 421)
		sender := newSender(t, srv.URL(), mail.Options{Retries: 1})
		if err := sender.Send(context.Background(), msg); err == nil {
			t.Fatal("Send succeeded")
		}
		if n := srv.Attempts(); n != 1 {
			t.Errorf("%d MAIL commands, want 1", n)
		}
	})
}

// silentServer accepts connections and never says a word.
type silentServer struct {
	addr     string
	accepted atomic.Int32
}

func newSilentServerAt(t *testing.T, addr string) *silentServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &silentServer{addr: ln.Addr().String()}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return s
}

func TestTimeout(t *testing.T) {
	msg := mail.Message{To: "a@example.com", Subject: "s", Text: "t"}
	t.Run("fail/server never answers", func(t *testing.T) {
		silent := newSilentServerAt(t, "127.0.0.1:0")
		opts := mail.Options{Timeout: 300 * time.Millisecond, Retries: 2, Backoff: 50 * time.Millisecond}
		sender := newSender(t, "smtp://"+silent.addr, opts)
		start := time.Now()
		err := sender.Send(context.Background(), msg)
		elapsed := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "greeting") {
			t.Fatalf("err = %v, want a deadline while waiting for the greeting", err)
		}
		min := time.Duration(opts.Retries)*opts.Timeout + opts.Backoff
		if elapsed < min || elapsed > min+time.Second {
			t.Errorf("took %s, want between %s and %s", elapsed, min, min+time.Second)
		}
		if n := silent.accepted.Load(); n != 2 {
			t.Errorf("%d connections, want 2 (timeouts are transient)", n)
		}
	})
	t.Run("fail/caller context ends first, no retry", func(t *testing.T) {
		silent := newSilentServerAt(t, "127.0.0.1:0")
		sender := newSender(t, "smtp://"+silent.addr, mail.Options{Timeout: 10 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := sender.Send(ctx, msg)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline", err)
		}
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("took %s despite the caller's 200ms deadline", elapsed)
		}
		if n := silent.accepted.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("fail/cancelled during backoff", func(t *testing.T) {
		srv := mailtest.NewServer(t)
		srv.FailNext(10, 421)
		sender := newSender(t, srv.URL(), mail.Options{Backoff: 10 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := sender.Send(ctx, msg)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "421") {
			t.Errorf("err = %v, want the deadline and the 421", err)
		}
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("took %s: backoff ignored the context", elapsed)
		}
	})
}

func TestNewSMTPSender(t *testing.T) {
	const secret = "hunter2-secret"
	cases := []struct {
		name, url, from string
		opts            mail.Options
		wantString      string
	}{
		{name: "ok/smtp with port", url: "smtp://mail.example.com:2525", from: from, wantString: "smtp://mail.example.com:2525"},
		{name: "ok/smtp default port 587", url: "smtp://mail.example.com", from: from, wantString: "smtp://mail.example.com:587"},
		{name: "ok/smtps default port 465", url: "smtps://u:" + secret + "@mail.example.com", from: from, wantString: "smtps://mail.example.com:465"},
		{name: "ok/ipv6", url: "smtp://[::1]:25", from: "no-reply@example.com", wantString: "smtp://[::1]:25"},
		{name: "ok/escaped credentials", url: "smtp://user%40x:p%2Fss@h:25", from: from, wantString: "smtp://h:25"},
		{name: "ok/smtp+insecure default port 587", url: "smtp+insecure://mail.example.com", from: from, wantString: "smtp+insecure://mail.example.com:587"},
		{name: "ok/smtp+insecure with credentials on loopback", url: "smtp+insecure://u:" + secret + "@127.0.0.1:25", from: from, wantString: "smtp+insecure://127.0.0.1:25"},
		{name: "fail/smtp+insecure with credentials off loopback", url: "smtp+insecure://u:" + secret + "@mail.example.com:25", from: from},
		{name: "fail/scheme", url: "http://u:" + secret + "@h:25", from: from},
		{name: "fail/unparsable", url: "smtp://u:" + secret + "@h:25\x7f", from: from},
		{name: "fail/bad port", url: "smtp://u:" + secret + "@h:port", from: from},
		{name: "fail/no host", url: "smtp://u:" + secret + "@:25", from: from},
		{name: "fail/path", url: "smtp://u:" + secret + "@h:25/x", from: from},
		{name: "fail/query", url: "smtp://u:" + secret + "@h:25?tls=no", from: from},
		{name: "fail/user without password", url: "smtp://u@h:25", from: from},
		{name: "fail/empty", url: "", from: from},
		{name: "fail/from not an address", url: "smtp://u:" + secret + "@h:25", from: "Portcullis"},
		{name: "fail/from with CRLF", url: "smtp://h:25", from: "a@example.com\r\nBcc: x@example.com"},
		{name: "fail/negative timeout", url: "smtp://h:25", from: from, opts: mail.Options{Timeout: -1}},
		{name: "fail/negative retries", url: "smtp://h:25", from: from, opts: mail.Options{Retries: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := mail.NewSMTPSender(tc.url, tc.from, tc.opts)
			if strings.HasPrefix(tc.name, "ok/") {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if s.String() != tc.wantString {
					t.Errorf("String() = %q, want %q", s.String(), tc.wantString)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestConnectionErrorsHideSecrets(t *testing.T) {
	const secret = "hunter2-secret"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sender := newSender(t, "smtp://user:"+secret+"@"+addr, mail.Options{Retries: 2, Backoff: time.Millisecond})
	err = sender.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "s", Text: "body-" + secret})
	if err == nil {
		t.Fatal("Send to a closed port succeeded")
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "body-") {
		t.Errorf("error leaks a secret: %v", err)
	}
	if !strings.Contains(err.Error(), "attempt 2 of 2") {
		t.Errorf("err = %v, want a refused connection retried once", err)
	}
}
