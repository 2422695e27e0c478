package smtp

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailward/mailward/internal/config"
)

// Config is the SMTP proxy's part of the config file (the smtp: section).
// Zero values take the defaults of DefaultConfig.
type Config struct {
	// Listen is HOST:PORT for plain SMTP with STARTTLS; empty: none.
	Listen string `yaml:"listen"`
	// ListenTLS is HOST:PORT for implicit TLS (as on port 465); empty: none.
	ListenTLS string `yaml:"listen_tls"`
	// Upstream is HOST:PORT of the MTA mail is relayed to.
	Upstream string `yaml:"upstream"`
	// Hostname is the name in the greeting, the EHLO to upstream and Received headers.
	Hostname string `yaml:"hostname"`

	// TLSCert and TLSKey are PEM files; with them STARTTLS is offered.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// UpstreamTLS is opportunistic, required or off.
	UpstreamTLS string `yaml:"upstream_tls"`
	// UpstreamTLSCA, when set, is a PEM file of CAs the upstream
	// certificate must chain to; without it the certificate is not verified.
	UpstreamTLSCA string `yaml:"upstream_tls_ca"`
	// UpstreamTLSServerName is the name verified in the upstream certificate
	// (default: the host of Upstream).
	UpstreamTLSServerName string `yaml:"upstream_tls_server_name"`

	// TrustedNetworks may send XCLIENT and (with ProxyProtocol) a PROXY header.
	TrustedNetworks []string `yaml:"trusted_networks"`
	// ProxyProtocol makes connections from trusted networks start with a
	// PROXY protocol v1 or v2 header.
	ProxyProtocol bool `yaml:"proxy_protocol"`

	MaxMessageSize      int64 `yaml:"max_message_size"`
	MaxRecipients       int   `yaml:"max_recipients"`
	MaxConnections      int   `yaml:"max_connections"`
	MaxConnectionsPerIP int   `yaml:"max_connections_per_ip"`

	// CommandTimeout bounds how long each client command line may take
	// to arrive in full.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// DataTimeout bounds how long the whole message content may take to
	// arrive after the 354.
	DataTimeout time.Duration `yaml:"data_timeout"`
	// UpstreamTimeout bounds each wait for upstream, connecting included.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxJunkCommands bounds the commands that move no mail (see
	// session.junk) a session may send between two messages relayed.
	MaxJunkCommands int `yaml:"max_junk_commands"`
	// MaxSessionTime bounds a whole session: no new command is taken
	// after it.
	MaxSessionTime time.Duration `yaml:"max_session_time"`

	// Quarantine is what a quarantine verdict does: header, tempfail or reject.
	Quarantine string `yaml:"quarantine"`
	// QuarantineHeader names the header a quarantined message is relayed with.
	QuarantineHeader string `yaml:"quarantine_header"`

	// Auth is how clients authenticate (SMTP AUTH): off, relay (the
	// exchange goes to upstream's session for the client) or dovecot.
	Auth string `yaml:"auth"`
	// DovecotSocket is the path of Dovecot's auth-client socket, for
	// Auth dovecot.
	DovecotSocket string `yaml:"dovecot_socket"`
	// AuthPlaintext offers AUTH before TLS too.
	AuthPlaintext bool `yaml:"auth_plaintext"`
	// AuthFailLimit failed authentications per AuthFailWindow from one
	// address; then AUTH is answered 454 for a while. 0: no limit.
	AuthFailLimit  int           `yaml:"auth_fail_limit"`
	AuthFailWindow time.Duration `yaml:"auth_fail_window"`

	// SpoolDir holds messages larger than a small in-memory buffer while
	// they are checked (default: the system temporary directory).
	SpoolDir string `yaml:"spool_dir"`
}

// Defaults.
const (
	DefaultMaxMessageSize      = 50 << 20
	DefaultMaxRecipients       = 100
	DefaultMaxConnections      = 500
	DefaultMaxConnectionsPerIP = 20
	DefaultCommandTimeout      = 5 * time.Minute
	DefaultDataTimeout         = 10 * time.Minute
	DefaultUpstreamTimeout     = 5 * time.Minute
	DefaultMaxJunkCommands     = 100
	DefaultMaxSessionTime      = time.Hour
	DefaultQuarantineHeader    = "X-Mailward-Quarantine"
	DefaultAuthFailLimit       = 10
	DefaultAuthFailWindow      = 15 * time.Minute
)

// DefaultConfig returns the defaults; Listen and Upstream stay empty.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return Config{
		Hostname:            host,
		UpstreamTLS:         "opportunistic",
		MaxMessageSize:      DefaultMaxMessageSize,
		MaxRecipients:       DefaultMaxRecipients,
		MaxConnections:      DefaultMaxConnections,
		MaxConnectionsPerIP: DefaultMaxConnectionsPerIP,
		CommandTimeout:      DefaultCommandTimeout,
		DataTimeout:         DefaultDataTimeout,
		UpstreamTimeout:     DefaultUpstreamTimeout,
		MaxJunkCommands:     DefaultMaxJunkCommands,
		MaxSessionTime:      DefaultMaxSessionTime,
		Quarantine:          "header",
		QuarantineHeader:    DefaultQuarantineHeader,
		Auth:                AuthOff,
		AuthFailLimit:       DefaultAuthFailLimit,
		AuthFailWindow:      DefaultAuthFailWindow,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Hostname = cmp.Or(c.Hostname, d.Hostname)
	c.UpstreamTLS = cmp.Or(c.UpstreamTLS, d.UpstreamTLS)
	c.MaxMessageSize = cmp.Or(c.MaxMessageSize, d.MaxMessageSize)
	c.MaxRecipients = cmp.Or(c.MaxRecipients, d.MaxRecipients)
	c.MaxConnections = cmp.Or(c.MaxConnections, d.MaxConnections)
	c.MaxConnectionsPerIP = cmp.Or(c.MaxConnectionsPerIP, d.MaxConnectionsPerIP)
	c.CommandTimeout = cmp.Or(c.CommandTimeout, d.CommandTimeout)
	c.DataTimeout = cmp.Or(c.DataTimeout, d.DataTimeout)
	c.UpstreamTimeout = cmp.Or(c.UpstreamTimeout, d.UpstreamTimeout)
	c.MaxJunkCommands = cmp.Or(c.MaxJunkCommands, d.MaxJunkCommands)
	c.MaxSessionTime = cmp.Or(c.MaxSessionTime, d.MaxSessionTime)
	c.Quarantine = cmp.Or(c.Quarantine, d.Quarantine)
	c.QuarantineHeader = cmp.Or(c.QuarantineHeader, d.QuarantineHeader)
	c.Auth = cmp.Or(c.Auth, d.Auth)
	c.AuthFailWindow = cmp.Or(c.AuthFailWindow, d.AuthFailWindow)
	return c
}

// Problems lists every bad value after defaults are applied, keys
// relative to the smtp section, so the config loader can point at each.
func (c Config) Problems() config.Problems {
	c = c.withDefaults()
	var out config.Problems
	bad := out.Add
	for key, addr := range map[string]string{"listen": c.Listen, "listen_tls": c.ListenTLS} {
		if addr == "" {
			continue
		}
		if err := config.CheckHostPort(addr, true); err != nil {
			bad(key, "%v", err)
		}
	}
	if c.Upstream == "" {
		bad("upstream", "required: HOST:PORT of the MTA to relay to")
	} else if err := config.CheckHostPort(c.Upstream, false); err != nil {
		bad("upstream", "%v", err)
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n") {
		bad("hostname", "%q: must be one word", c.Hostname)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert", "tls_cert and tls_key go together")
	}
	if c.TLSCert != "" && c.TLSKey != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			bad("tls_cert", "loading %s and tls_key %s: %v", c.TLSCert, c.TLSKey, err)
		}
	}
	if c.UpstreamTLSCA != "" {
		if pem, err := os.ReadFile(c.UpstreamTLSCA); err != nil {
			bad("upstream_tls_ca", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			bad("upstream_tls_ca", "%s: no PEM certificates in it", c.UpstreamTLSCA)
		}
	}
	if c.ListenTLS != "" && c.TLSCert == "" {
		bad("listen_tls", "needs tls_cert and tls_key")
	}
	switch c.UpstreamTLS {
	case "opportunistic", "required", "off":
	default:
		bad("upstream_tls", "%q: want opportunistic, required or off", c.UpstreamTLS)
	}
	if _, err := parseNetworks(c.TrustedNetworks); err != nil {
		bad("trusted_networks", "%v", err)
	}
	if c.MaxMessageSize < 0 {
		bad("max_message_size", "must not be negative")
	}
	for key, n := range map[string]int{"max_recipients": c.MaxRecipients, "max_connections": c.MaxConnections, "max_connections_per_ip": c.MaxConnectionsPerIP, "max_junk_commands": c.MaxJunkCommands} {
		if n < 0 {
			bad(key, "must not be negative")
		}
	}
	for key, d := range map[string]time.Duration{"command_timeout": c.CommandTimeout, "data_timeout": c.DataTimeout, "upstream_timeout": c.UpstreamTimeout, "max_session_time": c.MaxSessionTime} {
		if d < 0 {
			bad(key, "must be a positive duration such as 5m")
		}
	}
	switch c.Quarantine {
	case "header", "tempfail", "reject":
	default:
		bad("quarantine", "%q: want header, tempfail or reject", c.Quarantine)
	}
	if !validHeaderName(c.QuarantineHeader) {
		bad("quarantine_header", "%q is not a header name", c.QuarantineHeader)
	}
	switch c.Auth {
	case AuthOff, AuthRelay:
	case AuthDovecot:
		if c.DovecotSocket == "" {
			bad("dovecot_socket", "required with auth: dovecot: the path of Dovecot's auth-client socket")
		}
	default:
		bad("auth", "%q: want off, relay or dovecot", c.Auth)
	}
	if c.DovecotSocket != "" && !filepath.IsAbs(c.DovecotSocket) {
		bad("dovecot_socket", "%q: want an absolute path", c.DovecotSocket)
	}
	if c.AuthFailLimit < 0 {
		bad("auth_fail_limit", "must not be negative (0: no limit)")
	}
	if c.AuthFailWindow < 0 {
		bad("auth_fail_window", "must be a positive duration such as 15m")
	}
	if c.SpoolDir != "" {
		if fi, err := os.Stat(c.SpoolDir); err != nil || !fi.IsDir() {
			bad("spool_dir", "%q is not a directory", c.SpoolDir)
		}
	}
	return out
}

// Validate reports every problem as one error.
func (c Config) Validate() error { return c.Problems().Err() }

func parseNetworks(nets []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(n)
		if err != nil {
			return nil, fmt.Errorf("%q: want an address or CIDR network", n)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// settings is the checked, ready-to-use form of a Config; a reload
// swaps it whole.
type settings struct {
	cfg       Config
	trusted   []netip.Prefix
	cert      *tls.Certificate // nil: no TLS towards clients
	upTLS     *tls.Config      // nil: no TLS towards upstream
	spoolDir  string
	upstreamH string
}

func newSettings(cfg Config) (*settings, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	set := &settings{cfg: cfg, spoolDir: cfg.SpoolDir}
	set.trusted, _ = parseNetworks(cfg.TrustedNetworks)
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading smtp.tls_cert %s and smtp.tls_key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		set.cert = &cert
	}
	set.upstreamH, _, _ = net.SplitHostPort(cfg.Upstream)
	if cfg.UpstreamTLS != "off" {
		name := cfg.UpstreamTLSServerName
		if name == "" {
			name = set.upstreamH
		}
		set.upTLS = &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}
		if cfg.UpstreamTLSCA != "" {
			pem, err := os.ReadFile(cfg.UpstreamTLSCA)
			if err != nil {
				return nil, fmt.Errorf("reading smtp.upstream_tls_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("smtp.upstream_tls_ca %s: no PEM certificates in it", cfg.UpstreamTLSCA)
			}
			set.upTLS.RootCAs = pool
		} else {
			// Opportunistic encryption as MTAs do it: a certificate that
			// cannot be verified still beats plain text.
			set.upTLS.InsecureSkipVerify = true
		}
	}
	return set, nil
}

func (set *settings) isTrusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range set.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}
