// Package dovecotauth is the client side of Dovecot's authentication
// protocol (the auth-client socket, protocol version 1.2): enough to run
// one SASL exchange for an SMTP server and learn the user it names.
package dovecotauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxLine bounds a line from Dovecot; its own limit is 16 KiB.
const maxLine = 16 << 10

// maxHandshake bounds the lines of the handshake (MECH lines mostly).
const maxHandshake = 256

// maxOther bounds the lines about other requests read while waiting for
// the answer to ours: each read has its own timeout, so without it a
// Dovecot talking of something else would hold the exchange for ever.
const maxOther = 256

// minorVersion is the protocol's minor version this client announces.
// It decides what an empty resp= means: from 1.2 on, Dovecot takes it as
// an empty initial response (SMTP's "AUTH PLAIN ="), before it as no
// initial response at all (as some clients sent one for none).
const minorVersion = 2

// Mech is one mechanism Dovecot offers.
type Mech struct {
	Name string
	// Flags are Dovecot's: anonymous, plaintext, dictionary, active,
	// forward-secrecy, mutual-auth, private.
	Flags []string
}

// Has reports whether the mechanism has a flag.
func (m Mech) Has(flag string) bool {
	for _, f := range m.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// Info describes the client being authenticated, for Dovecot's logs,
// penalties and policies.
type Info struct {
	Service string // "smtp"
	Local   netip.AddrPort
	Remote  netip.AddrPort
	Secured bool // the client's connection is encrypted
}

// Status of one step.
type Status int

const (
	Continue Status = iota // Challenge holds the next challenge
	OK                     // User holds the authenticated user
	Fail                   // refused; Temp says whether to try later
)

// Result is Dovecot's answer to one step.
type Result struct {
	Status    Status
	Challenge string // base64, as for a 334 line; "" is an empty challenge
	User      string
	Temp      bool   // a temporary failure (Dovecot's "temp" or code=temp_fail)
	Reason    string // Dovecot's reason, safe to show the client
}

// Conn is one connection to the auth socket; it runs one exchange at a
// time. Every wait is bounded by the context or the timeout given.
type Conn struct {
	c       net.Conn
	br      *bufio.Reader
	timeout time.Duration
	mechs   []Mech
	id      uint64
	active  bool
	until   time.Time // while set, no read or write waits past it
	// atUntil: the last deadline set was until's, so a timeout is the
	// context's deadline passing.
	atUntil bool
}

// Dial connects to the socket at path and does the handshake. timeout
// bounds each later read and write.
func Dial(ctx context.Context, path string, timeout time.Duration) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to Dovecot auth socket %s: %w", path, err)
	}
	conn := &Conn{c: c, br: bufio.NewReaderSize(c, 4096), timeout: timeout}
	// The handshake's reads and writes end with the context too: its
	// deadline bounds them, and cancelling it closes the connection.
	conn.until, _ = ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err = conn.handshake()
	if !stop() && err == nil {
		err = ctx.Err()
	}
	conn.until = time.Time{}
	if err != nil {
		c.Close()
		switch {
		case ctx.Err() != nil:
			err = errors.Join(err, ctx.Err())
		case conn.atUntil && errors.Is(err, os.ErrDeadlineExceeded):
			// The socket's deadline was the context's, and the poller
			// can pass it a moment before the context's timer fires: it
			// is the context's error all the same.
			err = errors.Join(err, context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("Dovecot auth handshake on %s: %w", path, err)
	}
	return conn, nil
}

// deadline is when the next read or write must be done by.
func (c *Conn) deadline() time.Time {
	d := time.Now().Add(c.timeout)
	c.atUntil = !c.until.IsZero() && c.until.Before(d)
	if c.atUntil {
		return c.until
	}
	return d
}

func (c *Conn) handshake() error {
	if err := c.write("VERSION\t1\t" + strconv.Itoa(minorVersion) + "\nCPID\t" + strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		return err
	}
	gotVersion := false
	for i := 0; ; i++ {
		if i >= maxHandshake {
			return errors.New("handshake too long")
		}
		f, err := c.readFields()
		if err != nil {
			return err
		}
		switch f[0] {
		case "VERSION":
			if len(f) < 3 || f[1] != "1" {
				return fmt.Errorf("unsupported protocol version %q", strings.Join(f[1:], "."))
			}
			gotVersion = true
		case "MECH":
			if len(f) >= 2 && f[1] != "" {
				c.mechs = append(c.mechs, Mech{Name: strings.ToUpper(f[1]), Flags: f[2:]})
			}
		case "DONE":
			if !gotVersion {
				return errors.New("no VERSION line")
			}
			return nil
		}
		// SPID, CUID, COOKIE: for master connections, not ours.
	}
}

// Mechs is what Dovecot offers.
func (c *Conn) Mechs() []Mech { return c.mechs }

// Close closes the connection; an exchange under way is abandoned.
func (c *Conn) Close() error { return c.c.Close() }

// Auth starts an exchange with mech. initial is the client's initial
// response in base64 ("=" for an empty one), or "" for none.
func (c *Conn) Auth(mech string, initial string, info Info) (Result, error) {
	if c.active {
		return Result{}, errors.New("an exchange is under way")
	}
	if !validName(mech) {
		return Result{}, fmt.Errorf("bad mechanism name %q", mech)
	}
	if initial != "" && initial != "=" && !validBase64(initial) {
		return Result{}, errors.New("initial response is not base64")
	}
	c.id++
	var b strings.Builder
	fmt.Fprintf(&b, "AUTH\t%d\t%s\tservice=%s", c.id, mech, escape(info.Service))
	if info.Local.IsValid() {
		fmt.Fprintf(&b, "\tlip=%s\tlport=%d", info.Local.Addr().Unmap(), info.Local.Port())
	}
	if info.Remote.IsValid() {
		fmt.Fprintf(&b, "\trip=%s\trport=%d", info.Remote.Addr().Unmap(), info.Remote.Port())
	}
	if info.Secured {
		b.WriteString("\tsecured")
	}
	switch initial {
	case "":
		// No initial response: no resp field, and the mechanism starts
		// with a challenge (PLAIN's is empty).
	case "=":
		// An empty one (RFC 4954): an empty resp, as Dovecot's own
		// login processes send it; "=" is no base64 for the mechanism.
		b.WriteString("\tresp=")
	default:
		b.WriteString("\tresp=" + initial)
	}
	b.WriteString("\n")
	c.active = true
	if err := c.write(b.String()); err != nil {
		return Result{}, err
	}
	return c.result()
}

// Continue sends the client's response (base64) to the last challenge.
func (c *Conn) Continue(resp string) (Result, error) {
	if !c.active {
		return Result{}, errors.New("no exchange under way")
	}
	if resp != "" && !validBase64(resp) {
		return Result{}, errors.New("response is not base64")
	}
	if err := c.write("CONT\t" + strconv.FormatUint(c.id, 10) + "\t" + resp + "\n"); err != nil {
		return Result{}, err
	}
	return c.result()
}

func (c *Conn) result() (Result, error) {
	for i := 0; ; i++ {
		if i >= maxOther {
			return Result{}, errors.New("too many lines about other requests")
		}
		f, err := c.readFields()
		if err != nil {
			return Result{}, err
		}
		if len(f) < 2 || f[1] != strconv.FormatUint(c.id, 10) {
			continue // not about our exchange
		}
		switch f[0] {
		case "CONT":
			r := Result{Status: Continue}
			if len(f) > 2 {
				r.Challenge = f[2]
			}
			if !validBase64(r.Challenge) && r.Challenge != "" {
				return Result{}, errors.New("challenge is not base64")
			}
			return r, nil
		case "OK":
			c.active = false
			r := Result{Status: OK}
			refused := false
			for _, p := range f[2:] {
				k, v, _ := strings.Cut(p, "=")
				switch k {
				case "user":
					r.User = unescape(v)
				case "nologin", "proxy":
					// The password was right, but the user must not be
					// let in here (a disabled account, a referral, a
					// user served elsewhere): Dovecot's own login
					// processes take it as a failure, and so does this.
					refused = true
				case "reason":
					r.Reason = unescape(v)
				}
			}
			if refused {
				return Result{Status: Fail, User: r.User, Reason: r.Reason}, nil
			}
			if r.User == "" {
				return Result{}, errors.New("OK without a user")
			}
			r.Reason = ""
			return r, nil
		case "FAIL":
			c.active = false
			r := Result{Status: Fail}
			for _, p := range f[2:] {
				k, v, _ := strings.Cut(p, "=")
				switch k {
				case "temp":
					r.Temp = true
				case "code":
					r.Temp = r.Temp || v == "temp_fail"
				case "reason":
					r.Reason = unescape(v)
				}
			}
			return r, nil
		}
	}
}

func (c *Conn) write(s string) error {
	c.c.SetWriteDeadline(c.deadline())
	if _, err := c.c.Write([]byte(s)); err != nil {
		return fmt.Errorf("writing to Dovecot: %w", err)
	}
	return nil
}

// readFields reads one line, split at tabs.
func (c *Conn) readFields() ([]string, error) {
	c.c.SetReadDeadline(c.deadline())
	var line []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		if len(line)+len(frag) > maxLine {
			return nil, errors.New("line from Dovecot too long")
		}
		line = append(line, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading from Dovecot: %w", err)
		}
		break
	}
	return strings.Split(strings.TrimSuffix(string(line), "\n"), "\t"), nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validBase64 accepts the base64 alphabet only, so that nothing a client
// sends can add a field or a line to the protocol.
func validBase64(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}

// escape and unescape are Dovecot's tab-escaping of values: \001 is
// written \0011, tab \001t, LF \001n, CR \001r.
func escape(s string) string {
	return strings.NewReplacer("\x01", "\x011", "\t", "\x01t", "\n", "\x01n", "\r", "\x01r").Replace(s)
}

func unescape(s string) string {
	if !strings.Contains(s, "\x01") {
		return s
	}
	return strings.NewReplacer("\x011", "\x01", "\x01t", "\t", "\x01n", "\n", "\x01r", "\r").Replace(s)
}
