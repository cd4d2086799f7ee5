package mail

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"net/url"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
	"unicode/utf8"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// DefaultProductName is used when the data of a template names no product.
const DefaultProductName = "Portcullis"

// InviteData fills the invitation email.
type InviteData struct {
	ProductName string        // PORTCULLIS_PRODUCT_NAME; DefaultProductName when empty
	To          string        // the invited address
	Link        string        // {PUBLIC_URL}/invite?token=…, see Link
	Role        string        // the role the invite grants
	ExpiresIn   time.Duration // lifetime of the link, for example 48h
	// Organisation is the name of the organisation the invite is to ("":
	// the whole instance). It goes into the subject, so a name holding a
	// control character is refused (ErrInvalidMessage).
	Organisation string
	// ExistingAccount says the address already has an account, which
	// accepting (with its password) adds to Organisation; the email says so.
	ExistingAccount bool
}

// ResetData fills the password-reset email.
type ResetData struct {
	ProductName string
	To          string
	Link        string // {PUBLIC_URL}/reset-password?token=…
	ExpiresIn   time.Duration
}

// VerifyData fills the email-verification email.
type VerifyData struct {
	ProductName string
	To          string
	Link        string // {PUBLIC_URL}/verify-email?token=…
	ExpiresIn   time.Duration
}

// APIKeyExpiryData fills the notice of an API key's coming expiry.
type APIKeyExpiryData struct {
	ProductName string
	To          string
	KeyName     string // the name its owner gave it
	KeyHint     string // the display hint (never the key)
	// Owner names the machine user the key acts as, for a notice sent to
	// the person who created it; "" when the reader owns the key.
	Owner     string
	ExpiresAt time.Time
}

// Paths of the pages the emailed links open (see the contract).
const (
	InvitePath        = "/invite"
	ResetPasswordPath = "/reset-password"
	VerifyEmailPath   = "/verify-email"
)

// Templates renders the account emails, each as a plain-text and an HTML
// body (html/template: every value is escaped). It is safe for concurrent use.
type Templates struct {
	invite, reset, verify, apiKeyExpiring pair
}

type pair struct {
	text *texttemplate.Template // defines "subject" and the text body
	html *htmltemplate.Template // the layout with its "content"
}

// view is what the templates see.
type view struct {
	ProductName, To, Link, Role, Expires, Subject string
	// The invitation's.
	Organisation    string
	ExistingAccount bool
	// The API key expiry notice's.
	KeyName, KeyHint, Owner, ExpiresOn string
}

// NewTemplates parses the embedded templates.
func NewTemplates() (*Templates, error) {
	layout, err := htmltemplate.ParseFS(templateFS, "templates/layout.html.tmpl")
	if err != nil {
		return nil, fmt.Errorf("parse email layout: %w", err)
	}
	load := func(name string) (pair, error) {
		text, err := texttemplate.New(name+".txt.tmpl").Option("missingkey=error").ParseFS(templateFS, "templates/"+name+".txt.tmpl")
		if err != nil {
			return pair{}, fmt.Errorf("parse %s email text: %w", name, err)
		}
		if text.Lookup("subject") == nil {
			return pair{}, fmt.Errorf("parse %s email text: no subject defined", name)
		}
		html, err := layout.Clone()
		if err != nil {
			return pair{}, fmt.Errorf("parse %s email html: %w", name, err)
		}
		if html, err = html.ParseFS(templateFS, "templates/"+name+".html.tmpl"); err != nil {
			return pair{}, fmt.Errorf("parse %s email html: %w", name, err)
		}
		return pair{text: text, html: html.Option("missingkey=error")}, nil
	}
	t := &Templates{}
	if t.invite, err = load("invite"); err != nil {
		return nil, err
	}
	if t.reset, err = load("reset"); err != nil {
		return nil, err
	}
	if t.verify, err = load("verify"); err != nil {
		return nil, err
	}
	if t.apiKeyExpiring, err = load("apikey_expiring"); err != nil {
		return nil, err
	}
	return t, nil
}

// APIKeyExpiring renders the notice of d's key's coming expiry to d.To. It
// carries no link and never the key, only its name and hint.
func (t *Templates) APIKeyExpiring(d APIKeyExpiryData) (Message, error) {
	if strings.TrimSpace(d.KeyName) == "" || d.KeyHint == "" || d.ExpiresAt.IsZero() {
		return Message{}, fmt.Errorf("API key expiry email: %w: the key's name, hint and expiry are required", ErrInvalidMessage)
	}
	msg, err := t.apiKeyExpiring.execute(view{ProductName: productName(d.ProductName), To: d.To, KeyName: d.KeyName,
		KeyHint: d.KeyHint, Owner: d.Owner, ExpiresOn: d.ExpiresAt.UTC().Format("Monday 2 January 2006, 15:04 UTC")})
	if err != nil {
		return Message{}, fmt.Errorf("API key expiry email: %w", err)
	}
	return msg, nil
}

func productName(p string) string {
	if p == "" {
		return DefaultProductName
	}
	return p
}

// Invite renders the invitation to d.To: it names the organisation the
// invite is to, if any, and says when accepting adds an existing account
// to it.
func (t *Templates) Invite(d InviteData) (Message, error) {
	if strings.TrimSpace(d.Role) == "" {
		return Message{}, fmt.Errorf("invite email: %w: no role", ErrInvalidMessage)
	}
	if strings.IndexFunc(d.Organisation, unicode.IsControl) >= 0 || !utf8.ValidString(d.Organisation) {
		return Message{}, fmt.Errorf("invite email: %w: the organisation's name holds a control character or is not UTF-8", ErrInvalidMessage)
	}
	if d.ExistingAccount && strings.TrimSpace(d.Organisation) == "" {
		return Message{}, fmt.Errorf("invite email: %w: only an organisation's invite adds an existing account", ErrInvalidMessage)
	}
	msg, err := t.invite.render(view{ProductName: d.ProductName, To: d.To, Link: d.Link, Role: d.Role,
		Organisation: d.Organisation, ExistingAccount: d.ExistingAccount}, d.ExpiresIn)
	if err != nil {
		return Message{}, fmt.Errorf("invite email: %w", err)
	}
	return msg, nil
}

// PasswordReset renders the password-reset email to d.To.
func (t *Templates) PasswordReset(d ResetData) (Message, error) {
	msg, err := t.reset.render(view{ProductName: d.ProductName, To: d.To, Link: d.Link}, d.ExpiresIn)
	if err != nil {
		return Message{}, fmt.Errorf("password reset email: %w", err)
	}
	return msg, nil
}

// VerifyEmail renders the email-verification email to d.To.
func (t *Templates) VerifyEmail(d VerifyData) (Message, error) {
	msg, err := t.verify.render(view{ProductName: d.ProductName, To: d.To, Link: d.Link}, d.ExpiresIn)
	if err != nil {
		return Message{}, fmt.Errorf("verify email: %w", err)
	}
	return msg, nil
}

// render renders an email of a link, v's, that expires in expiresIn.
func (p pair) render(v view, expiresIn time.Duration) (Message, error) {
	if expiresIn <= 0 {
		return Message{}, fmt.Errorf("%w: the link's lifetime must be positive", ErrInvalidMessage)
	}
	if u, err := url.Parse(v.Link); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Message{}, fmt.Errorf("%w: the link must be an absolute http(s) URL", ErrInvalidMessage)
	}
	v.ProductName, v.Expires = productName(v.ProductName), HumanDuration(expiresIn)
	return p.execute(v)
}

// execute renders the subject, the text and the HTML body of v.
func (p pair) execute(v view) (Message, error) {
	var subject, text, html bytes.Buffer
	if err := p.text.ExecuteTemplate(&subject, "subject", v); err != nil {
		return Message{}, fmt.Errorf("render subject: %w", err)
	}
	v.Subject = subject.String()
	if err := p.text.Execute(&text, v); err != nil {
		return Message{}, fmt.Errorf("render text: %w", err)
	}
	if err := p.html.Execute(&html, v); err != nil {
		return Message{}, fmt.Errorf("render html: %w", err)
	}
	msg := Message{To: v.To, Subject: v.Subject, Text: text.String(), HTML: html.String()}
	if _, err := checkMessage(msg); err != nil {
		return Message{}, err
	}
	return msg, nil
}

// Link returns the emailed link publicURL + path + "?token=" + token, with
// path joined to any path publicURL already has and the token query-escaped,
// for example Link("https://id.example.com", InvitePath, tok) is
// "https://id.example.com/invite?token=…". Query parameters already in
// publicURL are kept; a fragment is dropped.
func Link(publicURL, path, token string) string {
	u, err := url.Parse(publicURL)
	if err != nil {
		// The setting is validated at start; still never emit an unescaped
		// token.
		return strings.TrimRight(publicURL, "/") + "/" + strings.TrimLeft(path, "/") + "?" + url.Values{"token": {token}}.Encode()
	}
	u = u.JoinPath(path)
	q := u.Query()
	q.Set("token", token)
	u.RawQuery = q.Encode()
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// HumanDuration renders d for people, rounded to the minute (to the second
// under a minute): "48 hours", "1 hour 30 minutes", "15 minutes", "3 days".
// Whole days are used from 72 hours on.
func HumanDuration(d time.Duration) string {
	if d < time.Minute {
		s := int64((d + time.Second/2) / time.Second)
		return plural(s, "second")
	}
	d = d.Round(time.Minute)
	if d >= 72*time.Hour && d%(24*time.Hour) == 0 {
		return plural(int64(d/(24*time.Hour)), "day")
	}
	h, m := int64(d/time.Hour), int64((d%time.Hour)/time.Minute)
	switch {
	case h == 0:
		return plural(m, "minute")
	case m == 0:
		return plural(h, "hour")
	}
	return plural(h, "hour") + " " + plural(m, "minute")
}

func plural(n int64, unit string) string {
	s := strconv.FormatInt(n, 10) + " " + unit
	if n != 1 {
		s += "s"
	}
	return s
}
