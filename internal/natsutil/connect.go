package natsutil

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stacklens/stacklens/internal/config"
)

// Options builds nats.go options from configuration: auth (user/password,
// token, nkey seed, creds), TLS, endless reconnects with jittered backoff,
// and logging of connection state changes.
func Options(c config.NATS, name string, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, &config.Error{Var: "NATS_NKEY_SEED_FILE", Msg: err.Error()}
		}
		opts = append(opts, o)
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts, nil
}

// Dial returns a connection to the configured servers at once: the first
// connect, like every reconnect, goes on in the background (Options
// retries a failed first connect), so a role can serve while NATS is down.
func Dial(c config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, err := Options(c, name, log)
	if err != nil {
		return nil, err
	}
	// NATS_URL is a comma-separated list; spaces after commas are allowed.
	nc, err := nats.Connect(strings.ReplaceAll(c.URL, " ", ""), opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", c.URL, err)
	}
	return nc, nil
}

// Connect is Dial, then waits up to the context's deadline for the first
// connection (reconnects continue afterwards).
func Connect(ctx context.Context, c config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	nc, err := Dial(c, name, log)
	if err != nil {
		return nil, err
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("nats: connect %s: %w", c.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nc, nil
}

// DefaultName is the client name of this process in NATS monitoring.
func DefaultName(role string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("stacklens-%s@%s:%d", role, host, os.Getpid())
}
