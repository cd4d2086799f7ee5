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
