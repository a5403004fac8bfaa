package alerting

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"mime"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/config"
)

// email sends alert mail through the configured SMTP server: implicit TLS
// ("tls", usually port 465), STARTTLS (required, not opportunistic) or
// plain ("none"), with PLAIN authentication when a user is configured.
type email struct {
	cfg     config.Alerting
	addr    string
	timeout time.Duration
	tls     *tls.Config // test seam: trusted roots
}

func newEmail(a config.Alerting) (*email, error) {
	switch a.SMTPTLS {
	case "", "starttls", "tls", "none":
	default:
		return nil, &config.Error{Var: "SMTP_TLS", Msg: fmt.Sprintf("unknown mode %q", a.SMTPTLS)}
	}
	if a.SMTPTLS == "" {
		a.SMTPTLS = "starttls"
	}
	for _, v := range append([]string{a.SMTPFrom}, a.SMTPTo...) {
		if strings.ContainsAny(v, "\r\n<>") || !strings.Contains(v, "@") {
			return nil, &config.Error{Var: "SMTP_TO", Msg: fmt.Sprintf("bad address %q", v)}
		}
	}
	return &email{cfg: a, addr: net.JoinHostPort(a.SMTPHost, strconv.Itoa(a.SMTPPort)), timeout: a.DeliveryTimeout,
		tls: &tls.Config{ServerName: a.SMTPHost, MinVersion: tls.VersionTLS12}}, nil
}

func (m *email) Close() error { return nil }

func (m *email) send(ctx context.Context, evs []*Event) []error {
	errs := make([]error, len(evs))
	for i, ev := range evs {
		if i > 0 && errs[i-1] != nil && !isPermanent(errs[i-1]) {
			errs[i] = errs[i-1]
			continue
		}
		if err := m.sendOne(ctx, ev); err != nil {
			errs[i] = fmt.Errorf("email: %w", err)
		}
	}
	return errs
}

func (m *email) sendOne(ctx context.Context, ev *Event) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	d := net.Dialer{}
	var conn net.Conn
	var err error
	if m.cfg.SMTPTLS == "tls" {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: m.tls}).DialContext(ctx, "tcp", m.addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", m.addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, m.cfg.SMTPHost)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("stacklens"); err != nil {
		return err
	}
	if m.cfg.SMTPTLS == "starttls" {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return permanent(fmt.Errorf("server %s does not offer STARTTLS (SMTP_TLS=starttls)", m.addr))
		}
		if err := c.StartTLS(m.tls); err != nil {
			return err
		}
	}
	if m.cfg.SMTPUser != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.SMTPUser, m.cfg.SMTPPassword, m.cfg.SMTPHost)); err != nil {
			return err
		}
	}
	if err := c.Mail(m.cfg.SMTPFrom); err != nil {
		return err
	}
	for _, to := range m.cfg.SMTPTo {
		if err := c.Rcpt(to); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(m.message(ev)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// headerSafe removes line breaks (no header injection from service names).
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

func (m *email) message(ev *Event) []byte {
	var b bytes.Buffer
	subject := fmt.Sprintf("[%s %s] %s - %s", strings.ToUpper(ev.State), ev.Severity, ev.Rule, ev.Service)
	fmt.Fprintf(&b, "From: %s\r\n", m.cfg.SMTPFrom)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(m.cfg.SMTPTo, ", "))
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", headerSafe(subject)))
	fmt.Fprintf(&b, "Date: %s\r\n", ev.EmittedAt.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.%s@stacklens>\r\n", ev.AlertID, ev.State)
	fmt.Fprintf(&b, "X-StackLens-Alert-ID: %s\r\n", ev.AlertID)
	fmt.Fprintf(&b, "X-StackLens-Fingerprint: %s\r\n", ev.Fingerprint)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	body := []string{
		ev.Message,
		"",
		"Rule:      " + ev.Rule + " (" + ev.Severity + ")",
		"Service:   " + ev.Service,
		"Metric:    " + ev.Metric,
		"Window:    " + ev.Window,
	}
	if ev.Value != nil {
		body = append(body, "Value:     "+fmtValue(*ev.Value))
	}
	if ev.Threshold != nil {
		body = append(body, "Threshold: "+ev.Operator+" "+fmtValue(*ev.Threshold))
	}
	if ev.WindowStart != nil {
		body = append(body, "Window start: "+ev.WindowStart.UTC().Format(time.RFC3339))
	}
	body = append(body, "Fired at:  "+ev.FiredAt.UTC().Format(time.RFC3339))
	if ev.ResolvedAt != nil {
		body = append(body, "Resolved:  "+ev.ResolvedAt.UTC().Format(time.RFC3339))
	}
	body = append(body, "Alert id:  "+ev.AlertID, "")
	for _, l := range body {
		// dot-stuffing is done by net/smtp's data writer; normalise breaks
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(l, "\r", ""), "\n", "\r\n"))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
