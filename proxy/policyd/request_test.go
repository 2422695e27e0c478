package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

func read(s string) (map[string]string, error) {
	return readAttrs(bufio.NewReaderSize(strings.NewReader(s), MaxLine))
}

func TestReadAttrs(t *testing.T) {
	cases := []struct {
		name, in string
		want     map[string]string
		err      error
	}{
		{"plain", "request=smtpd_access_policy\nprotocol_state=RCPT\n\n",
			map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT"}, nil},
		{"crlf", "a=1\r\nb=2\r\n\r\n", map[string]string{"a": "1", "b": "2"}, nil},
		{"empty value and = in value", "sender=\nccert_subject=a=b\n\n", map[string]string{"sender": "", "ccert_subject": "a=b"}, nil},
		{"first of repeated wins", "a=1\na=2\n\n", map[string]string{"a": "1"}, nil},
		{"bare empty line", "\n", map[string]string{}, nil},
		{"no equals", "a=1\ngarbage\n\n", nil, errMalformed},
		{"empty name", "=x\n\n", nil, errMalformed},
		{"NUL", "a=x\x00y\n\n", nil, errMalformed},
		{"clean EOF", "", nil, io.EOF},
		{"EOF within", "a=1\nb=2", nil, io.ErrUnexpectedEOF},
		{"EOF before end", "a=1\n", nil, io.ErrUnexpectedEOF},
		{"long line", "a=" + strings.Repeat("x", MaxLine) + "\n\n", nil, errTooLong},
		{"big request", strings.Repeat("a="+strings.Repeat("x", 1000)+"\n", MaxRequest/1000+2) + "\n", nil, errTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := read(c.in)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v; want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %v; want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("%s = %q; want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

// A malformed request is read to its end, so the next one parses.
func TestReadAttrsStaysInStep(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("junk\nmore junk\n\nrequest=smtpd_access_policy\n\n"), MaxLine)
	if _, err := readAttrs(r); !errors.Is(err, errMalformed) {
		t.Fatalf("first request: err = %v; want malformed", err)
	}
	got, err := readAttrs(r)
	if err != nil || got["request"] != "smtpd_access_policy" {
		t.Fatalf("second request = %v, %v", got, err)
	}
}

func TestParseRequest(t *testing.T) {
	base := func(kv ...string) map[string]string {
		m := map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "192.0.2.1"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<delete>" {
				delete(m, kv[i])
				continue
			}
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, c := range []struct {
		name  string
		attrs map[string]string
		ok    bool
	}{
		{"minimal", base(), true},
		{"no request", base("request", "<delete>"), false},
		{"other request", base("request", "junk"), false},
		{"no state", base("protocol_state", "<delete>"), false},
		{"bad address", base("client_address", "not-an-ip"), false},
		{"unknown address", base("client_address", "unknown"), true},
		{"ipv6", base("client_address", "2001:db8::1"), true},
		{"bad size", base("size", "-1"), false},
		{"size", base("size", "12345"), true},
		{"empty", map[string]string{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseRequest(c.attrs)
			if c.ok != (err == nil) {
				t.Fatalf("err = %v; want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v is not marked malformed", err)
			}
			if r != nil && r.state != "RCPT" {
				t.Fatalf("state = %q", r.state)
			}
		})
	}
	r, err := parseRequest(base("client_address", "::ffff:192.0.2.9", "client_name", "unknown", "size", "42",
		"protocol_state", "end-of-message", "encryption_protocol", "TLSv1.3", "sasl_username", "u1"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ip.String() != "192.0.2.9" || r.name != "" || r.size != 42 {
		t.Fatalf("parsed %+v", r)
	}
	if st, ok := r.stage(); !ok || st != policy.StageEOM {
		t.Fatalf("stage = %v, %v; want eom", st, ok)
	}
	if mi := r.mailInfo(); !mi.TLS || mi.TLSVersion != "TLSv1.3" || mi.AuthUser != "u1" {
		t.Fatalf("mail info = %+v", mi)
	}
}

func TestStages(t *testing.T) {
	for state, want := range map[string]policy.Stage{
		"CONNECT": policy.StageConnect, "EHLO": policy.StageHelo, "HELO": policy.StageHelo,
		"MAIL": policy.StageMail, "RCPT": policy.StageRcpt, "DATA": policy.StageData, "END-OF-MESSAGE": policy.StageEOM,
	} {
		if got, ok := (&request{state: state}).stage(); !ok || got != want {
			t.Errorf("%s → %v, %v; want %v", state, got, ok, want)
		}
	}
	for _, state := range []string{"VRFY", "ETRN", "SOMETHING-NEW"} {
		if _, ok := (&request{state: state}).stage(); ok {
			t.Errorf("%s has a stage", state)
		}
	}
}

func TestAction(t *testing.T) {
	for _, c := range []struct {
		v       policy.Verdict
		prepend string
		want    string
	}{
		{policy.Verdict{Action: policy.Continue}, "", "DUNNO"},
		{policy.Verdict{Action: policy.Continue}, "X-A: 1", "PREPEND X-A: 1"},
		{policy.Verdict{Action: policy.Accept}, "", "OK"},
		{policy.Verdict{Action: policy.Reject}, "X-A: 1", "550 5.7.1 Message rejected by policy"},
		{policy.Verdict{Action: policy.Reject, Code: 554, Enhanced: "5.7.0", Text: "no\r\nthanks"}, "", "554 5.7.0 no  thanks"},
		{policy.Verdict{Action: policy.Reject, Code: 451, Text: "wrong class"}, "", "550 5.7.1 wrong class"},
		{policy.Verdict{Action: policy.Tempfail, Text: "later"}, "", "451 4.7.1 later"},
		{policy.Verdict{Action: policy.Tempfail, Code: 421, Enhanced: "4.3.2", Text: "bye"}, "", "421 4.3.2 bye"},
		{policy.Verdict{Action: policy.Discard, Rule: "r1"}, "", "DISCARD rule r1"},
		{policy.Verdict{Action: policy.Discard}, "", "DISCARD Discarded by policy"},
		{policy.Verdict{Action: policy.Quarantine, Reason: "score 9.0 >= 8.0"}, "X-A: 1", "HOLD score 9.0 >= 8.0"},
		{policy.Verdict{Action: policy.Action(42)}, "", deferAnswer},
	} {
		got, used := action(c.v, c.prepend)
		if got != c.want {
			t.Errorf("action(%v, %q) = %q; want %q", c.v.Action, c.prepend, got, c.want)
		}
		if used != strings.HasPrefix(got, "PREPEND") {
			t.Errorf("action(%v) used = %v for %q", c.v.Action, used, got)
		}
	}
	if got := header(policy.HeaderEdit{Name: "Authentication-Results", Value: "mx;\r\n\tspf=pass"}); got != "Authentication-Results: mx; spf=pass" {
		t.Errorf("folded header = %q", got)
	}
	for _, bad := range []string{"", "Bad Name", "a:b", "é"} {
		if got := header(policy.HeaderEdit{Name: bad, Value: "v"}); got != "" {
			t.Errorf("header name %q accepted: %q", bad, got)
		}
	}
}

// fuzzRules answer every kind of verdict, picked by the request's own
// attributes, so the fuzzer reaches every answer path.
var fuzzRules = policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, _ *[]policy.Match) policy.Verdict {
	pick := f.MailFrom + f.Rcpt + f.Helo
	if st == policy.StageEOM {
		pick = f.Macros["size"]
	}
	switch {
	case strings.Contains(pick, "rej"):
		return policy.Verdict{Action: policy.Reject, Text: "no " + pick}
	case strings.Contains(pick, "tmp"):
		return policy.Verdict{Action: policy.Tempfail, Code: 421}
	case strings.Contains(pick, "acc"):
		return policy.Verdict{Action: policy.Accept}
	case strings.Contains(pick, "dis"):
		return policy.Verdict{Action: policy.Discard}
	case strings.Contains(pick, "hol"):
		return policy.Verdict{Action: policy.Quarantine, Reason: pick}
	case strings.Contains(pick, "hdr"):
		return policy.Verdict{Headers: []policy.HeaderEdit{{Name: "X-Fuzz", Value: pick}, {Name: pick, Value: "x"}}}
	}
	return policy.Verdict{}
})

// bufStream is a stream over fixed input; deadlines never fire.
type bufStream struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (b *bufStream) Read(p []byte) (int, error)       { return b.in.Read(p) }
func (b *bufStream) Write(p []byte) (int, error)      { return b.out.Write(p) }
func (b *bufStream) SetReadDeadline(time.Time) error  { return nil }
func (b *bufStream) SetWriteDeadline(time.Time) error { return nil }

func emptyLines(in []byte) int {
	lines := bytes.Split(in, []byte("\n"))
	n := 0
	for _, l := range lines[:len(lines)-1] {
		if len(l) == 0 || string(l) == "\r" {
			n++
		}
	}
	return n
}

var answerRE = regexp.MustCompile(`^action=(DUNNO|OK|PREPEND [!-9;-~]+: [^\n]*|[45][0-9][0-9] [45]\.[0-9]{1,3}\.[0-9]{1,3} [^\n]+|DISCARD [^\n]+|HOLD [^\n]+|` + deferAnswer + `)\n\n`)

// FuzzPolicyRequest feeds arbitrary bytes to one policy connection: the
// server must never panic, must answer only well-formed actions, and must
// leave no engine connection open when the connection ends.
func FuzzPolicyRequest(f *testing.F) {
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nhelo_name=h\nsender=a@b\nrecipient=c@d\ninstance=1.2.3\n\n"))
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=192.0.2.1\nclient_port=5\n\n" +
		"request=smtpd_access_policy\nprotocol_state=EHLO\nclient_address=192.0.2.1\nclient_port=5\nhelo_name=hol\n\n" +
		"request=smtpd_access_policy\nprotocol_state=MAIL\nclient_address=192.0.2.1\nclient_port=5\nhelo_name=x\nsender=hdr@x\n\n" +
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nclient_port=5\nhelo_name=x\nsender=hdr@x\nrecipient=r@x\ninstance=9\n\n" +
		"request=smtpd_access_policy\nprotocol_state=DATA\nclient_address=192.0.2.1\nclient_port=5\nhelo_name=x\nsender=hdr@x\ninstance=9\n\n" +
		"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=192.0.2.1\nclient_port=5\nhelo_name=x\nsender=hdr@x\ninstance=9\nsize=100\n\n"))
	f.Add([]byte("garbage\n\nrequest=smtpd_access_policy\nprotocol_state=DATA\nrecipient=dis@x\ninstance=1\n\n"))
	f.Add([]byte("request=smtpd_access_policy\r\nprotocol_state=end-of-message\r\nsender=acc@x\r\n\r\n"))
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=::1\nrecipient=tmp\n"))
	f.Add([]byte("a=" + strings.Repeat("x", MaxLine+10) + "\n\n"))
	f.Add([]byte("\n\n\n"))
	eng := policy.NewEngine(policy.Settings{Hostname: "mx.fuzz.example"}, nil, fuzzRules, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := New(eng, Config{}, slog.New(slog.DiscardHandler))
		st := &bufStream{in: bytes.NewReader(in)}
		s.serveStream(st, "fuzz", nil)
		out := st.out.String()
		n := 0
		for out != "" {
			m := answerRE.FindStringIndex(out)
			if m == nil {
				t.Fatalf("answer %d is not a well-formed action: %q", n+1, clip([]byte(out)))
			}
			out = out[m[1]:]
			n++
		}
		// Each answer ends a request at an empty line, but for one to an
		// oversized request, after which the connection closes.
		if ends := emptyLines(in); n > ends+1 {
			t.Fatalf("%d answers for %d request ends", n, ends)
		}
		if open := eng.Open("policy"); open != 0 {
			t.Fatalf("%d engine connections left open", open)
		}
		if got := s.Stats(); got.Instances != 0 {
			t.Fatalf("%d instances held after the connection ended", got.Instances)
		}
	})
}
