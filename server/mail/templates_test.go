package mail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail"
)

func TestTemplatesEscapeHTML(t *testing.T) {
	tpl := newTemplates(t)
	const hostileName = `<script>alert("name")</script> & Co`
	const hostileTo = `"<script>alert(1)</script>"@example.com`
	const hostileRole = `<img src=x onerror=alert(2)>`
	link := mail.Link(publicURL, mail.InvitePath, token)

	render := map[string]func() (mail.Message, error){
		"invite": func() (mail.Message, error) {
			return tpl.Invite(mail.InviteData{ProductName: hostileName, To: hostileTo, Link: link, Role: hostileRole, ExpiresIn: time.Hour})
		},
		"invite_to_an_organisation": func() (mail.Message, error) {
			return tpl.Invite(mail.InviteData{ProductName: hostileName, To: hostileTo, Link: link, Role: hostileRole, ExpiresIn: time.Hour,
				Organisation: hostileRole, ExistingAccount: true})
		},
		"reset": func() (mail.Message, error) {
			return tpl.PasswordReset(mail.ResetData{ProductName: hostileName, To: hostileTo, Link: link, ExpiresIn: time.Hour})
		},
		"verify": func() (mail.Message, error) {
			return tpl.VerifyEmail(mail.VerifyData{ProductName: hostileName, To: hostileTo, Link: link, ExpiresIn: time.Hour})
		},
		"apikey_expiring": func() (mail.Message, error) {
			return tpl.APIKeyExpiring(mail.APIKeyExpiryData{ProductName: hostileName, To: hostileTo, KeyName: hostileRole,
				KeyHint: "pcak_abc...wxyz", Owner: hostileRole, ExpiresAt: time.Now().Add(72 * time.Hour)})
		},
	}
	for name, fn := range render {
		t.Run("ok/"+name, func(t *testing.T) {
			msg, err := fn()
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if strings.Contains(msg.HTML, "<script") || strings.Contains(msg.HTML, "<img") {
				t.Errorf("HTML holds an unescaped tag:\n%s", msg.HTML)
			}
			if !strings.Contains(msg.HTML, "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt; &amp; Co") {
				t.Errorf("HTML lacks the escaped product name:\n%s", msg.HTML)
			}
			if !strings.Contains(msg.Text, hostileName) || !strings.Contains(msg.Subject, hostileName) {
				t.Errorf("text or subject lacks the product name as is: %q", msg.Subject)
			}
			if msg.To != hostileTo {
				t.Errorf("To = %q", msg.To)
			}
		})
	}
}

// TestInviteNamesOrganisation: an organisation's invitation names the
// organisation in its subject, text and HTML; to an address that already
// has an account it says that accepting adds that account to the
// organisation, with its password; a platform invitation names none.
func TestInviteNamesOrganisation(t *testing.T) {
	tpl := newTemplates(t)
	base := mail.InviteData{ProductName: "Portcullis", To: "a@example.com", Link: "https://id.example.com/invite?token=x", Role: "user", ExpiresIn: time.Hour}
	const existing = "already has an account"
	for _, tc := range []struct {
		name          string
		org           string
		existing      bool
		names, adding bool
	}{
		{"ok/platform", "", false, false, false},
		{"ok/organisation_new_address", "Globex Corp", false, true, false},
		{"ok/organisation_existing_account", "Globex Corp", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := base
			d.Organisation, d.ExistingAccount = tc.org, tc.existing
			msg, err := tpl.Invite(d)
			if err != nil {
				t.Fatal(err)
			}
			for part, body := range map[string]string{"subject": msg.Subject, "text": msg.Text, "html": msg.HTML} {
				if got := strings.Contains(body, "Globex Corp"); got != tc.names {
					t.Errorf("%s names the organisation: %v, want %v:\n%s", part, got, tc.names, body)
				}
				if part == "subject" {
					continue
				}
				if got := strings.Contains(body, existing); got != tc.adding {
					t.Errorf("%s says the account is added: %v, want %v:\n%s", part, got, tc.adding, body)
				}
				if got := strings.Contains(body, "choose your password"); got == tc.adding {
					t.Errorf("%s asks to choose a password: %v, want %v:\n%s", part, got, !tc.adding, body)
				}
			}
		})
	}
}

func TestTemplatesRefuseBadData(t *testing.T) {
	tpl := newTemplates(t)
	good := mail.InviteData{ProductName: "Acme", To: "a@example.com", Link: "https://id.example.com/invite?token=x", Role: "user", ExpiresIn: time.Hour}
	cases := []struct {
		name   string
		change func(d *mail.InviteData)
	}{
		{"fail/javascript link", func(d *mail.InviteData) { d.Link = "javascript:alert(1)" }},
		{"fail/relative link", func(d *mail.InviteData) { d.Link = "/invite?token=x" }},
		{"fail/empty link", func(d *mail.InviteData) { d.Link = "" }},
		{"fail/zero lifetime", func(d *mail.InviteData) { d.ExpiresIn = 0 }},
		{"fail/no role", func(d *mail.InviteData) { d.Role = "" }},
		{"fail/no recipient", func(d *mail.InviteData) { d.To = "" }},
		{"fail/recipient with CRLF", func(d *mail.InviteData) { d.To = "a@example.com\r\nBcc: b@example.com" }},
		{"fail/product name with CRLF", func(d *mail.InviteData) { d.ProductName = "Acme\r\nBcc: b@example.com" }},
		{"fail/organisation with CRLF", func(d *mail.InviteData) { d.Organisation = "Globex\r\nBcc: b@example.com" }},
		{"fail/organisation with a control character", func(d *mail.InviteData) { d.Organisation = "Globex\u0085Corp" }},
		{"fail/organisation not UTF-8", func(d *mail.InviteData) { d.Organisation = "Globex\xff" }},
		{"fail/existing account without an organisation", func(d *mail.InviteData) { d.ExistingAccount = true }},
	}
	if _, err := tpl.Invite(good); err != nil {
		t.Fatalf("ok/good data: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			tc.change(&d)
			if _, err := tpl.Invite(d); !errors.Is(err, mail.ErrInvalidMessage) {
				t.Errorf("err = %v, want ErrInvalidMessage", err)
			}
		})
	}
	if _, err := tpl.PasswordReset(mail.ResetData{To: "a@example.com", Link: "ftp://x/y", ExpiresIn: time.Hour}); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("reset with ftp link: err = %v", err)
	}
	if _, err := tpl.VerifyEmail(mail.VerifyData{To: "a@example.com", Link: "https://x/verify-email?token=t", ExpiresIn: -time.Hour}); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("verify with negative lifetime: err = %v", err)
	}
	key := mail.APIKeyExpiryData{To: "a@example.com", KeyName: "deploy", KeyHint: "pcak_abc...wxyz", ExpiresAt: time.Now()}
	for name, change := range map[string]func(d *mail.APIKeyExpiryData){
		"no key name":  func(d *mail.APIKeyExpiryData) { d.KeyName = " " },
		"no hint":      func(d *mail.APIKeyExpiryData) { d.KeyHint = "" },
		"no expiry":    func(d *mail.APIKeyExpiryData) { d.ExpiresAt = time.Time{} },
		"no recipient": func(d *mail.APIKeyExpiryData) { d.To = "" },
	} {
		d := key
		change(&d)
		if _, err := tpl.APIKeyExpiring(d); !errors.Is(err, mail.ErrInvalidMessage) {
			t.Errorf("API key expiry email with %s: err = %v", name, err)
		}
	}
	msg, err := tpl.APIKeyExpiring(key)
	if err != nil || !strings.Contains(msg.Text, `"deploy" (pcak_abc...wxyz)`) || strings.Contains(msg.HTML, "copy this link") {
		t.Errorf("API key expiry email: %v\n%s\n%s", err, msg.Text, msg.HTML)
	}
}

func TestLink(t *testing.T) {
	cases := []struct {
		name, base, path, token, want string
	}{
		{"ok/plain", "https://id.example.com", mail.InvitePath, "abc", "https://id.example.com/invite?token=abc"},
		{"ok/trailing slash", "https://id.example.com/", mail.ResetPasswordPath, "abc", "https://id.example.com/reset-password?token=abc"},
		{"ok/base path", "https://example.com/auth/", mail.VerifyEmailPath, "abc", "https://example.com/auth/verify-email?token=abc"},
		{"ok/path without slash", "http://127.0.0.1:8080", "invite", "abc", "http://127.0.0.1:8080/invite?token=abc"},
		{"ok/token escaped", "https://id.example.com", mail.InvitePath, "a+b/c=d&e f#g", "https://id.example.com/invite?token=a%2Bb%2Fc%3Dd%26e+f%23g"},
		{"ok/existing query kept", "https://id.example.com/?tenant=x", mail.InvitePath, "abc", "https://id.example.com/invite?tenant=x&token=abc"},
		{"ok/token in base replaced", "https://id.example.com/?token=old", mail.InvitePath, "new", "https://id.example.com/invite?token=new"},
		{"ok/fragment dropped", "https://id.example.com/#top", mail.InvitePath, "abc", "https://id.example.com/invite?token=abc"},
		{"ok/unparsable base still escapes", "https://id.example.com/%zz", mail.InvitePath, "a&b", "https://id.example.com/%zz/invite?token=a%26b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := mail.Link(tc.base, tc.path, tc.token); got != tc.want {
				t.Errorf("Link(%q, %q, %q) = %q, want %q", tc.base, tc.path, tc.token, got, tc.want)
			}
		})
	}
}

func TestHumanDuration(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want string
	}{
		{48 * time.Hour, "48 hours"},
		{time.Hour, "1 hour"},
		{90 * time.Minute, "1 hour 30 minutes"},
		{61 * time.Minute, "1 hour 1 minute"},
		{15 * time.Minute, "15 minutes"},
		{time.Minute, "1 minute"},
		{89 * time.Second, "1 minute"},
		{90 * time.Second, "2 minutes"},
		{30 * time.Second, "30 seconds"},
		{time.Second, "1 second"},
		{72 * time.Hour, "3 days"},
		{168 * time.Hour, "7 days"},
		{73 * time.Hour, "73 hours"},
		{24 * time.Hour, "24 hours"},
	}
	for _, tc := range cases {
		t.Run("ok/"+tc.d.String(), func(t *testing.T) {
			if got := mail.HumanDuration(tc.d); got != tc.want {
				t.Errorf("HumanDuration(%s) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

func newJSONLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestLogSender(t *testing.T) {
	var buf bytes.Buffer
	sender := mail.NewLogSender(newJSONLogger(&buf))
	tpl := newTemplates(t)
	link := mail.Link(publicURL, mail.ResetPasswordPath, token)
	msg, err := tpl.PasswordReset(mail.ResetData{To: "dev@example.com", Link: link, ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want the start warning and the message:\n%s", len(lines), buf.String())
	}
	if lines[0]["level"] != "WARN" || !strings.Contains(lines[0]["msg"].(string), "for development only") {
		t.Errorf("start warning = %v", lines[0])
	}
	got := lines[1]
	if got["level"] != "WARN" || got["not sent"] != true || !strings.HasPrefix(got["msg"].(string), "email NOT SENT (no PORTCULLIS_SMTP_URL): ") {
		t.Errorf("log line = %v", got)
	}
	if got["to"] != "dev@example.com" || got["subject"] != msg.Subject {
		t.Errorf("to/subject = %v / %v", got["to"], got["subject"])
	}
	if text, _ := got["text"].(string); !strings.Contains(text, link) {
		t.Errorf("logged text lacks the link %q: %q", link, text)
	}
	if !strings.Contains(buf.String(), "not sent") {
		t.Errorf("log lacks \"not sent\"")
	}

	// A nil logger falls back to slog.Default.
	if mail.NewLogSender(nil) == nil {
		t.Error("NewLogSender(nil) = nil")
	}
}
