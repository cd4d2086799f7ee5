package mailtest_test

import (
	"fmt"
	"net/smtp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
)

// fatalRecorder stands in for a test so that a helper's Fatalf can be
// observed; call it inside run.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func send(t *testing.T, srv *mailtest.Server, to, raw string) error {
	t.Helper()
	return smtp.SendMail(srv.Addr(), nil, "sender@example.com", []string{to}, []byte(strings.ReplaceAll(raw, "\n", "\r\n")))
}

func TestWaitForWalksMessagesInOrder(t *testing.T) {
	srv := mailtest.NewServer(t)
	for i := 1; i <= 2; i++ {
		if err := send(t, srv, "Bob@Example.com", fmt.Sprintf("Subject: number %d\n\nhttps://x.test/invite?token=t%d\n", i, i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := send(t, srv, "other@example.com", "Subject: other\n\nbody\n"); err != nil {
		t.Fatal(err)
	}
	first := srv.WaitFor(t, "bob@example.com", time.Second)
	second := srv.WaitFor(t, "bob@example.com", time.Second)
	if first.Subject != "number 1" || second.Subject != "number 2" {
		t.Errorf("got %q then %q", first.Subject, second.Subject)
	}
	if first.Token(t) != "t1" || second.Link(t) != "https://x.test/invite?token=t2" {
		t.Errorf("tokens %q, %q", first.Token(t), second.Link(t))
	}
	if first.From != "sender@example.com" || first.TLS || first.AuthUser != "" {
		t.Errorf("envelope/session = %q %v %q", first.From, first.TLS, first.AuthUser)
	}
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("Messages() holds %d, want 3", n)
	}
	msg := run(t, func(tb testing.TB) { srv.WaitFor(tb, "bob@example.com", 50*time.Millisecond) })
	if !strings.Contains(msg, "no new message to bob@example.com") {
		t.Errorf("third WaitFor: fatal = %q", msg)
	}
}

func TestWaitForWaits(t *testing.T) {
	srv := mailtest.NewServer(t)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = send(t, srv, "late@example.com", "Subject: late\n\nbody\n")
	}()
	if got := srv.WaitFor(t, "late@example.com", 5*time.Second); got.Subject != "late" {
		t.Errorf("subject = %q", got.Subject)
	}
}

func TestLinkHelpers(t *testing.T) {
	cases := []struct {
		name, text, wantLink, wantFatal string
	}{
		{"ok/one link", "open https://x.test/reset-password?token=abc now", "https://x.test/reset-password?token=abc", ""},
		{"ok/same link twice", "https://x.test/a?token=abc\nhttps://x.test/a?token=abc\nhttps://x.test/help", "https://x.test/a?token=abc", ""},
		{"fail/no token link", "see https://x.test/help", "", "no link with a token"},
		{"fail/two token links", "https://x.test/a?token=1 https://x.test/a?token=2", "", "several token links"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mailtest.Received{Subject: "s", Text: tc.text}
			var got string
			fatal := run(t, func(tb testing.TB) { got = r.Link(tb) })
			if !strings.Contains(fatal, tc.wantFatal) || (tc.wantFatal == "") != (fatal == "") {
				t.Errorf("fatal = %q, want %q", fatal, tc.wantFatal)
			}
			if got != tc.wantLink {
				t.Errorf("Link = %q, want %q", got, tc.wantLink)
			}
		})
	}
}

func TestParse(t *testing.T) {
	crlf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
	cases := []struct {
		name, raw, subject, text, html, wantErr string
	}{
		{
			name: "ok/plain 7bit without content type",
			raw:  "Subject: hi\n\nline 1\nline 2\n", subject: "hi", text: "line 1\nline 2\n",
		},
		{
			name: "ok/B-encoded subject, base64 parts nested in multipart/mixed",
			raw: `Subject: =?UTF-8?B?w6ljb2xl?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

w6ljb2xlIGh0dHBzOi8veC50ZXN0Lz90b2tlbj1h
--inner
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<a href=3D"https://x.test/?token=3Da">=C3=A9</a>
--inner--
--outer
Content-Type: application/pdf
Content-Transfer-Encoding: base64

AAAA
--outer--
`,
			subject: "école", text: "école https://x.test/?token=a", html: "<a href=\"https://x.test/?token=a\">é</a>",
		},
		{
			name: "fail/unknown transfer encoding",
			raw:  "Subject: x\nContent-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbody\n", wantErr: "transfer encoding",
		},
		{
			name: "fail/multipart without boundary",
			raw:  "Subject: x\nContent-Type: multipart/alternative\n\nbody\n", wantErr: "without boundary",
		},
		{
			name: "fail/bad encoded subject",
			raw:  "Subject: =?x-unknown?q?abc?=\n\nbody\n", wantErr: "subject",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mailtest.Parse(crlf(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Subject != tc.subject || got.Text != tc.text || got.HTML != tc.html {
				t.Errorf("got subject %q text %q html %q", got.Subject, got.Text, got.HTML)
			}
		})
	}
}

func TestServerRefusesMalformedMessages(t *testing.T) {
	srv := mailtest.NewServer(t)
	err := send(t, srv, "a@example.com", "Subject: x\nContent-Type: multipart/alternative\n\nbody\n")
	if err == nil || !strings.Contains(err.Error(), "554") {
		t.Fatalf("err = %v, want 554", err)
	}
	fatal := run(t, func(tb testing.TB) { srv.WaitFor(tb, "a@example.com", 10*time.Millisecond) })
	if !strings.Contains(fatal, "without boundary") {
		t.Errorf("WaitFor does not report the refused message: %q", fatal)
	}
}

func TestAuthAndFaults(t *testing.T) {
	srv := mailtest.NewServer(t, mailtest.WithAuth("u", "p@ss:word"))
	if want := "smtp://u:p%40ss%3Aword@" + srv.Addr(); srv.URL() != want {
		t.Errorf("URL = %q, want %q", srv.URL(), want)
	}
	msg := []byte("Subject: x\r\n\r\nbody\r\n")
	cases := []struct {
		name    string
		auth    smtp.Auth
		failN   int
		code    int
		wantErr string
	}{
		{name: "fail/no auth", wantErr: "530"},
		{name: "fail/wrong password", auth: smtp.PlainAuth("", "u", "wrong", "127.0.0.1"), wantErr: "535"},
		{name: "fail/wrong user", auth: smtp.PlainAuth("", "x", "p@ss:word", "127.0.0.1"), wantErr: "535"},
		{name: "fail/injected 421", auth: smtp.PlainAuth("", "u", "p@ss:word", "127.0.0.1"), failN: 1, code: 421, wantErr: "421"},
		{name: "ok/right credentials", auth: smtp.PlainAuth("", "u", "p@ss:word", "127.0.0.1")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.failN > 0 {
				srv.FailNext(tc.failN, tc.code)
			}
			err := smtp.SendMail(srv.Addr(), tc.auth, "s@example.com", []string{"r@example.com"}, msg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("SendMail: %v", err)
				}
				if got := srv.WaitFor(t, "r@example.com", time.Second); got.AuthUser != "u" {
					t.Errorf("AuthUser = %q", got.AuthUser)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want %s", err, tc.wantErr)
			}
		})
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages accepted, want 1", n)
	}
	// MAIL commands: no auth (1), injected 421 (1), success (1); the failed
	// logins never reached MAIL.
	if n := srv.Attempts(); n != 3 {
		t.Errorf("Attempts = %d, want 3", n)
	}
}
