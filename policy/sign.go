package policy

import (
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/mailward/mailward/signing"
)

// SignChoice is what a sign or no_sign rule asked for.
type SignChoice int

const (
	// SignDefault leaves it to the client: authenticated, internal or
	// submitted locally.
	SignDefault SignChoice = iota
	// SignYes signs whatever the client.
	SignYes
	// SignNo never signs.
	SignNo
)

var signChoiceNames = [...]string{"", "sign", "no_sign"}

func (s SignChoice) String() string {
	if s < 0 || int(s) >= len(signChoiceNames) {
		return fmt.Sprintf("sign(%d)", int(s))
	}
	return signChoiceNames[s]
}

// MarshalText makes the choice readable in JSON.
func (s SignChoice) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Signing outcomes, in Facts.Signing, the log line and the metrics.
const (
	SignSigned     = "signed"
	SignMissingKey = "missing_key"  // the key table entry has no usable key
	SignNotInTable = "not_in_table" // no entry serves the From domain
	SignNoFrom     = "no_from"      // not exactly one From address
	SignError      = "error"
)

// signState is the current message's signing: the choice rules made and
// the body hash under way.
type signState struct {
	choice SignChoice
	msg    *signing.Message
	keys   []*signing.Key
	addr   string // the From address, once known
	// raw are the header values as received, parallel to Facts.Headers:
	// a "simple" signature needs them byte for byte.
	raw []string
}

// noteSign keeps the first sign or no_sign a rule gave: for the
// connection at connect and HELO, for the message after.
func (c *Conn) noteSign(st Stage, v Verdict) {
	if v.Sign == SignDefault {
		return
	}
	if st <= StageHelo {
		if c.connSign == SignDefault {
			c.connSign = v.Sign
		}
		return
	}
	if c.sign.choice == SignDefault {
		c.sign.choice = v.Sign
	}
}

// startSigning starts hashing the body at end of headers when the key
// table serves the From domain, so that a decision at end of message
// (rules there included) can still sign.
func (c *Conn) startSigning() {
	t := c.snap.settings.Signing
	if !t.Enabled() || c.signChoice() == SignNo {
		return
	}
	addr, ok := fromAddress(c.facts.HeaderValues("From"))
	if !ok {
		return
	}
	c.sign.addr = addr
	c.sign.keys = t.Lookup(addr)
	for _, k := range c.sign.keys {
		if k.Usable() {
			c.sign.msg = t.NewMessage(c.sign.keys, DomainOf(addr))
			return
		}
	}
}

func (c *Conn) signChoice() SignChoice {
	if c.sign.choice != SignDefault {
		return c.sign.choice
	}
	return c.connSign
}

// wantSign reports whether the message is to be signed: a rule said so,
// or it comes from an authenticated, internal or local client. A From
// of ours alone never makes mail ours.
func (c *Conn) wantSign() bool {
	t := c.snap.settings.Signing
	// A front that never passes the message (SkipContent) has nothing to sign.
	if !t.Enabled() || c.facts.NoContent {
		return false
	}
	switch c.signChoice() {
	case SignYes:
		return true
	case SignNo:
		return false
	}
	return c.facts.AuthUser != "" || c.info.Local || t.Internal(c.facts.IP)
}

// signMessage adds the DKIM signatures to an accepted or quarantined
// verdict, over the header as the fronts will deliver it: the fields
// received, less those removed or replaced, plus every edit in v.
func (c *Conn) signMessage(v Verdict) Verdict {
	if !c.wantSign() {
		return v
	}
	t := c.snap.settings.Signing
	log := func() *slog.Logger { return c.e.log.With("queue_id", c.facts.QueueID, "from", c.sign.addr) }
	switch {
	case c.sign.addr == "":
		c.facts.Signing = SignNoFrom
		log().Warn("message not signed: it has no single From address")
		return v
	case len(c.sign.keys) == 0:
		c.facts.Signing = SignNotInTable
		log().Debug("message not signed: no key table entry for the From domain")
		return v
	case c.sign.msg == nil:
		c.facts.Signing = SignMissingKey
		log().Warn("message to sign but its key is missing", "keys", keyNames(c.sign.keys), "on_missing_key", onMissing(t))
		if t.TempfailOnMissingKey() {
			c.degraded = true
			return Verdict{Action: Tempfail, Code: 451, Enhanced: "4.3.0", Text: "Signing key unavailable; try again later",
				Stage: StageEOM, Reason: "DKIM signing key missing"}
		}
		return v
	}
	sigs, err := c.sign.msg.Sign(c.deliveredHeader(v), time.Now())
	if err != nil {
		c.facts.Signing = SignError
		log().Error("message not signed", "err", err)
		return v
	}
	for _, k := range c.sign.keys {
		if !k.Usable() {
			log().Warn("one key of the From domain is missing; signed with the others", "key", k.String())
		}
	}
	c.facts.Signing = SignSigned
	for _, s := range sigs {
		v.Headers = append(v.Headers, HeaderEdit{Name: "DKIM-Signature", Value: s.Value, Prepend: true})
	}
	return v
}

// deliveredHeader applies v's removals and edits to the received header,
// as the milter and SMTP proxy fronts do: removed and replaced fields go,
// prepended edits go on top, the others after the received fields.
func (c *Conn) deliveredHeader(v Verdict) []signing.Field {
	have := c.facts.Headers
	drop := make([]bool, len(have))
	for _, r := range v.Remove {
		n := 0
		for i, h := range have {
			if strings.EqualFold(h.Name, r.Name) {
				if n++; n == r.Index {
					drop[i] = true
				}
			}
		}
	}
	var top, bottom []signing.Field
	for _, ed := range v.Headers {
		f := signing.Field{Name: ed.Name, Raw: " " + crlfLines(ed.Value)}
		switch {
		case ed.Replace:
			for i, h := range have {
				if strings.EqualFold(h.Name, ed.Name) {
					drop[i] = true
				}
			}
			bottom = append(bottom, f)
		case ed.Prepend:
			top = append(top, f)
		default:
			bottom = append(bottom, f)
		}
	}
	out := top
	for i, h := range have {
		if !drop[i] {
			out = append(out, signing.Field{Name: h.Name, Raw: c.sign.raw[i]})
		}
	}
	return append(out, bottom...)
}

// fromAddress returns the address of the single From field with a single
// mailbox; DKIM signs mail from one author only.
func fromAddress(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	if list, err := mail.ParseAddressList(values[0]); err == nil {
		if len(list) != 1 {
			return "", false
		}
		return list[0].Address, true
	}
	// An address net/mail cannot parse (odd display names, 8-bit text):
	// the angle address, else the field.
	v := values[0]
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			v = v[i+1 : i+j]
		}
	}
	v = strings.TrimSpace(v)
	if strings.Count(v, "@") != 1 || strings.ContainsAny(v, " \t,;") {
		return "", false
	}
	return v, true
}

func crlfLines(s string) string {
	if strings.IndexByte(s, '\n') < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

func keyNames(keys []*signing.Key) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.String()
	}
	return strings.Join(names, ", ")
}

func onMissing(t *signing.Table) string {
	if t.TempfailOnMissingKey() {
		return signing.MissingTempfail
	}
	return signing.MissingUnsigned
}
