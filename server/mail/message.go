package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one email to one recipient, with a plain-text and an HTML body.
type Message struct {
	To      string // one address, "alice@example.com" or "Alice <alice@example.com>"
	Subject string
	Text    string // plain-text body (lines may end in LF; they are sent as CRLF)
	HTML    string // HTML body; may be empty, then only the text part is sent
}

// Sender delivers messages.
type Sender interface {
	// Send delivers msg or returns why it could not. The error never holds the
	// message body or a credential.
	Send(ctx context.Context, msg Message) error
}

// ErrInvalidMessage is wrapped by the errors of Send (and of the templates)
// when a message cannot be sent as given: a missing or malformed recipient,
// CR or LF in the recipient or subject, an empty body. Retrying does not help.
var ErrInvalidMessage = errors.New("invalid message")

// checkMessage validates msg and returns its parsed recipient.
func checkMessage(msg Message) (*mail.Address, error) {
	if strings.ContainsAny(msg.To, "\r\n") {
		return nil, fmt.Errorf("%w: recipient contains CR or LF", ErrInvalidMessage)
	}
	if strings.ContainsAny(msg.Subject, "\r\n") {
		return nil, fmt.Errorf("%w: subject contains CR or LF", ErrInvalidMessage)
	}
	if strings.TrimSpace(msg.To) == "" {
		return nil, fmt.Errorf("%w: no recipient", ErrInvalidMessage)
	}
	to, err := mail.ParseAddress(msg.To)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient is not an email address", ErrInvalidMessage)
	}
	if strings.TrimSpace(msg.Subject) == "" {
		return nil, fmt.Errorf("%w: empty subject", ErrInvalidMessage)
	}
	if strings.TrimSpace(msg.Text) == "" {
		return nil, fmt.Errorf("%w: empty text body", ErrInvalidMessage)
	}
	return to, nil
}

// parseFrom parses the sender setting (PORTCULLIS_MAIL_FROM).
func parseFrom(from string) (*mail.Address, error) {
	if strings.ContainsAny(from, "\r\n") {
		return nil, errors.New("mail from: contains CR or LF")
	}
	addr, err := mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("mail from: not an address such as \"Portcullis <no-reply@example.com>\": %w", err)
	}
	return addr, nil
}

// newMessageID returns a unique Message-ID (with angle brackets) in the
// sender's domain.
func newMessageID(from *mail.Address) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("message id: %w", err)
	}
	domain := "localhost"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 && i+1 < len(from.Address) {
		domain = from.Address[i+1:]
	}
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}

// encodeSubject returns the Subject header value: s itself when it is short
// printable ASCII, else RFC 2047 "Q" encoded words, split at character
// boundaries and folded so that every header line stays within 76
// characters.
func encodeSubject(s string) string {
	const prefix, suffix = "=?utf-8?q?", "?="
	const maxWord = 76 - len("Subject: ")
	plain := len("Subject: ")+len(s) <= 78
	for i := 0; i < len(s) && plain; i++ {
		plain = s[i] >= ' ' && s[i] <= '~'
	}
	if plain {
		return s
	}
	var words []string
	var cur strings.Builder
	var buf [utf8.UTFMax]byte
	for _, r := range s {
		var enc strings.Builder
		for _, c := range buf[:utf8.EncodeRune(buf[:], r)] {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("!*+-/", c) >= 0:
				enc.WriteByte(c)
			case c == ' ':
				enc.WriteByte('_')
			default:
				fmt.Fprintf(&enc, "=%02X", c)
			}
		}
		if cur.Len() > 0 && len(prefix)+cur.Len()+enc.Len()+len(suffix) > maxWord {
			words = append(words, prefix+cur.String()+suffix)
			cur.Reset()
		}
		cur.WriteString(enc.String())
	}
	words = append(words, prefix+cur.String()+suffix)
	// Whitespace between encoded words is ignored by decoders, so the folds
	// add nothing to the decoded subject.
	return strings.Join(words, "\r\n ")
}

// build renders msg as an RFC 5322 message with CRLF line endings: headers,
// then a multipart/alternative body with a quoted-printable text/plain part
// and (when msg.HTML is set) a quoted-printable text/html part.
func build(from, to *mail.Address, msg Message, date time.Time, messageID string) ([]byte, error) {
	var buf bytes.Buffer
	header := func(k, v string) { buf.WriteString(k + ": " + v + "\r\n") }
	header("From", from.String())
	header("To", to.String())
	header("Subject", encodeSubject(msg.Subject))
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", messageID)
	header("MIME-Version", "1.0")
	header("Auto-Submitted", "auto-generated")

	if msg.HTML == "" {
		header("Content-Type", "text/plain; charset=utf-8")
		header("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, msg.Text); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	header("Content-Type", "multipart/alternative;\r\n boundary="+mw.Boundary())
	buf.WriteString("\r\n")
	for _, part := range []struct{ ctype, content string }{
		{"text/plain; charset=utf-8", msg.Text},
		{"text/html; charset=utf-8", msg.HTML},
	} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.ctype},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, fmt.Errorf("build message: %w", err)
		}
		if err := writeQP(w, part.content); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("build message: %w", err)
	}
	buf.Write(body.Bytes())
	return buf.Bytes(), nil
}

// writeQP writes s quoted-printable encoded; the encoder turns every line
// ending into CRLF and keeps lines under 76 characters with soft breaks. An
// unterminated last line is closed by the multipart boundary or, for a
// single part, by the end-of-data marker.
func writeQP(w interface{ Write([]byte) (int, error) }, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(s)); err != nil {
		return fmt.Errorf("build message: %w", err)
	}
	if err := qp.Close(); err != nil {
		return fmt.Errorf("build message: %w", err)
	}
	return nil
}
