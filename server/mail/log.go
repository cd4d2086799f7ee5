package mail

import (
	"context"
	"log/slog"
)

// LogMessage is the log message of every email LogSender writes.
const LogMessage = "email NOT SENT (no PORTCULLIS_SMTP_URL): configure SMTP to deliver it; its content follows"

// LogSender is the Sender used when no SMTP server is configured: it writes
// every message, link included, to the log at WARN with the attribute
// "not sent": true, so nothing is dropped silently. It is meant for
// development; it is the one place where Portcullis logs a one-time link.
type LogSender struct {
	log *slog.Logger
}

var _ Sender = (*LogSender)(nil)

// NewLogSender returns a LogSender writing to log (slog.Default() when nil)
// and warns once, at once, that emails will not be delivered.
func NewLogSender(log *slog.Logger) *LogSender {
	if log == nil {
		log = slog.Default()
	}
	log.Warn("no PORTCULLIS_SMTP_URL: emails will be written to this log, with their one-time links, and not sent; for development only")
	return &LogSender{log: log}
}

// Send validates msg like SMTPSender does, then logs its recipient, subject
// and text body (which holds the link) at WARN.
func (l *LogSender) Send(ctx context.Context, msg Message) error {
	if _, err := checkMessage(msg); err != nil {
		return err
	}
	l.log.LogAttrs(ctx, slog.LevelWarn, LogMessage,
		slog.Bool("not sent", true),
		slog.String("to", msg.To),
		slog.String("subject", msg.Subject),
		slog.String("text", msg.Text),
	)
	return nil
}
