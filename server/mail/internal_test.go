package mail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
)

// routeTo makes s reach addr whatever host its URL names, so a test can use
// a non-loopback host name with a server on loopback.
func routeTo(s *SMTPSender, addr string) {
	d := &net.Dialer{}
	s.dialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
}

// TestCredentialsNeedTLSOffLoopback: to a host that is not loopback,
// credentials go only over TLS; without STARTTLS nothing is sent.
func TestCredentialsNeedTLSOffLoopback(t *testing.T) {
	const host = "mail.portcullis.test"
	const user, pass = "mailer", "hunter2-secret"
	msg := Message{To: "a@example.com", Subject: "s", Text: "t"}

	t.Run("fail/no STARTTLS offered", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.WithAuth(user, pass))
		_, port, _ := net.SplitHostPort(srv.Addr())
		s, err := NewSMTPSender("smtp://"+user+":"+pass+"@"+net.JoinHostPort(host, port), "no-reply@example.com", Options{Backoff: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		routeTo(s, srv.Addr())
		start := time.Now()
		err = s.Send(context.Background(), msg)
		if !errors.Is(err, errNoTLSForAuth) {
			t.Fatalf("err = %v, want errNoTLSForAuth", err)
		}
		if time.Since(start) >= 5*time.Second {
			t.Error("the refusal was retried")
		}
		if strings.Contains(err.Error(), pass) {
			t.Errorf("error leaks the password: %v", err)
		}
		if srv.Attempts() != 0 || len(srv.Messages()) != 0 {
			t.Error("the server got a transaction")
		}
	})
	t.Run("ok/STARTTLS offered", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.WithAuth(user, pass), mailtest.WithSTARTTLS(host))
		_, port, _ := net.SplitHostPort(srv.Addr())
		s, err := NewSMTPSender("smtp://"+user+":"+pass+"@"+net.JoinHostPort(host, port), "no-reply@example.com", Options{TLSConfig: srv.ClientTLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		routeTo(s, srv.Addr())
		if err := s.Send(context.Background(), msg); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got := srv.WaitFor(t, "a@example.com", 5*time.Second)
		if !got.TLS || got.AuthUser != user {
			t.Errorf("TLS=%v user=%q", got.TLS, got.AuthUser)
		}
	})
	t.Run("fail/certificate for another name", func(t *testing.T) {
		srv := mailtest.NewServer(t, mailtest.WithAuth(user, pass), mailtest.WithSTARTTLS())
		_, port, _ := net.SplitHostPort(srv.Addr())
		s, err := NewSMTPSender("smtp://"+user+":"+pass+"@"+net.JoinHostPort(host, port), "no-reply@example.com", Options{TLSConfig: srv.ClientTLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		routeTo(s, srv.Addr())
		if err := s.Send(context.Background(), msg); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
		if srv.Attempts() != 0 {
			t.Error("the server got a transaction")
		}
	})
}

func TestIsLoopback(t *testing.T) {
	cases := map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true,
		"mail.example.com": false, "10.0.0.1": false, "::": false, "0.0.0.0": false, "localhost.example.com": false,
	}
	for host, want := range cases {
		name := "ok/" + host
		if !want {
			name = "fail/" + host
		}
		t.Run(name, func(t *testing.T) {
			if got := isLoopback(host); got != want {
				t.Errorf("isLoopback(%q) = %v", host, got)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"ok/421", fmt.Errorf("mail from: %w", &textproto.Error{Code: 421, Msg: "busy"}), true},
		{"ok/451", &textproto.Error{Code: 451, Msg: "try later"}, true},
		{"ok/timeout", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"ok/eof", fmt.Errorf("greeting: %w", io.EOF), true},
		{"ok/net error", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{"fail/550", &textproto.Error{Code: 550, Msg: "no such user"}, false},
		{"fail/535", &textproto.Error{Code: 535, Msg: "bad credentials"}, false},
		{"fail/permanent", permanentError{errNoTLSForAuth}, false},
		{"fail/plain error", errors.New("something"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := transient(tc.err); got != tc.want {
				t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// machineAddress returns an IP address of this machine that is not loopback,
// so a test server can be reached the way a remote SMTP server is. Without
// one (a machine with loopback only), it returns a non-loopback name and
// routes the sender's connections to the loopback server instead (routeTo).
func machineAddress(t *testing.T) (host string, routed bool) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || ipn.IP.To4() == nil {
			continue
		}
		// Usable only if a listener can bind it.
		ln, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		ln.Close()
		return ipn.IP.String(), false
	}
	t.Logf("no non-loopback IPv4 address on this machine: using a non-loopback name routed to 127.0.0.1")
	return "mail.portcullis.test", true
}

// TestPlaintextRefusedOffLoopback: over the real SMTP server reached at a
// non-loopback address of this machine, smtp:// refuses a server that offers
// no STARTTLS (nothing is sent, no retry), uses STARTTLS when offered, and
// smtp+insecure:// accepts plain text on purpose, still never with
// credentials. Loopback keeps working without STARTTLS.
func TestPlaintextRefusedOffLoopback(t *testing.T) {
	host, routed := machineAddress(t)
	const user, pass = "mailer", "hunter2-secret"
	msg := Message{To: "a@example.com", Subject: "s", Text: "t"}
	cases := []struct {
		name     string
		scheme   string
		auth     bool
		starttls bool
		loopback bool
		wantErr  error // nil: delivered
		wantTLS  bool
	}{
		{name: "fail/smtp, no STARTTLS offered", scheme: "smtp", wantErr: errNoSTARTTLS},
		{name: "fail/smtp with credentials, no STARTTLS offered", scheme: "smtp", auth: true, wantErr: errNoTLSForAuth},
		{name: "ok/smtp, STARTTLS offered", scheme: "smtp", starttls: true, wantTLS: true},
		{name: "ok/smtp with credentials, STARTTLS offered", scheme: "smtp", auth: true, starttls: true, wantTLS: true},
		{name: "ok/smtp+insecure, no STARTTLS offered", scheme: "smtp+insecure"},
		{name: "ok/smtp+insecure still uses STARTTLS when offered", scheme: "smtp+insecure", starttls: true, wantTLS: true},
		{name: "ok/smtp to loopback, no STARTTLS offered", scheme: "smtp", loopback: true},
		{name: "ok/smtp to loopback with credentials, no STARTTLS offered", scheme: "smtp", auth: true, loopback: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []mailtest.Option
			h := "127.0.0.1"
			if !tc.loopback {
				h = host
				if !routed {
					opts = append(opts, mailtest.WithHost(host))
				}
			}
			if tc.auth {
				opts = append(opts, mailtest.WithAuth(user, pass))
			}
			if tc.starttls {
				opts = append(opts, mailtest.WithSTARTTLS(h))
			}
			srv := mailtest.NewServer(t, opts...)
			_, port, _ := net.SplitHostPort(srv.Addr())
			creds := ""
			if tc.auth {
				creds = user + ":" + pass + "@"
			}
			s, err := NewSMTPSender(tc.scheme+"://"+creds+net.JoinHostPort(h, port), "no-reply@example.com",
				Options{TLSConfig: srv.ClientTLSConfig(), Backoff: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if routed && !tc.loopback {
				routeTo(s, srv.Addr())
			}
			start := time.Now()
			err = s.Send(context.Background(), msg)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if time.Since(start) >= 5*time.Second {
					t.Error("the refusal was retried")
				}
				if strings.Contains(err.Error(), pass) {
					t.Errorf("error leaks the password: %v", err)
				}
				if srv.Attempts() != 0 || len(srv.Messages()) != 0 {
					t.Error("the server got a transaction")
				}
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.WaitFor(t, "a@example.com", 5*time.Second)
			wantUser := ""
			if tc.auth {
				wantUser = user
			}
			if got.TLS != tc.wantTLS || got.AuthUser != wantUser {
				t.Errorf("session TLS=%v user=%q, want TLS=%v user=%q", got.TLS, got.AuthUser, tc.wantTLS, wantUser)
			}
		})
	}
}

// TestCheckPlaintext: the decision for a session without TLS, by host,
// scheme and credentials.
func TestCheckPlaintext(t *testing.T) {
	cases := []struct {
		name string
		url  string
		tls  bool
		want error
	}{
		{"ok/TLS, remote", "smtp://u:p@mail.example.com", true, nil},
		{"ok/plain, loopback IP", "smtp://127.0.0.1:25", false, nil},
		{"ok/plain, loopback IPv6", "smtp://[::1]:25", false, nil},
		{"ok/plain, localhost, credentials", "smtp://u:p@localhost:25", false, nil},
		{"ok/plain, remote, smtp+insecure", "smtp+insecure://mail.example.com:25", false, nil},
		{"ok/plain, loopback, smtp+insecure with credentials", "smtp+insecure://u:p@127.0.0.1:25", false, nil},
		{"fail/plain, remote", "smtp://mail.example.com:25", false, errNoSTARTTLS},
		{"fail/plain, private IP", "smtp://10.1.2.3:25", false, errNoSTARTTLS},
		{"fail/plain, unspecified address", "smtp://0.0.0.0:25", false, errNoSTARTTLS},
		{"fail/plain, remote, credentials", "smtp://u:p@mail.example.com:25", false, errNoTLSForAuth},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSMTPSender(tc.url, "no-reply@example.com", Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = s.checkPlaintext(tc.tls)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("checkPlaintext(%v) = %v, want %v", tc.tls, err, tc.want)
			}
		})
	}
}
