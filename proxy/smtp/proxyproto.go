package smtp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// proxyHeader is what a PROXY protocol header says about a connection
// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt).
type proxyHeader struct {
	Src, Dst netip.AddrPort
	// Local means the header carries no client address (v1 UNKNOWN, v2
	// LOCAL or an unsupported family): the connection's own addresses stand.
	Local bool
}

// proxyV2Sig starts every v2 header. It reads as an empty line and QUIT to
// a server that does not expect it.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const proxyV1Max = 107

var errNoProxyHeader = errors.New("no PROXY protocol header")

// readProxyHeader reads a v1 or v2 header and nothing after it.
func readProxyHeader(r *bufio.Reader) (proxyHeader, error) {
	first, err := r.Peek(1)
	if err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch first[0] {
	case 'P':
		return readProxyV1(r)
	case '\r':
		return readProxyV2(r)
	}
	return proxyHeader{}, errNoProxyHeader
}

func readProxyV1(r *bufio.Reader) (proxyHeader, error) {
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return proxyHeader{}, fmt.Errorf("reading PROXY v1 header: %w", err)
		}
		line = append(line, c)
		if c == '\n' {
			break
		}
		if len(line) >= proxyV1Max {
			return proxyHeader{}, errors.New("PROXY v1 header longer than 107 bytes")
		}
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return proxyHeader{}, errors.New("PROXY v1 header does not end in CRLF")
	}
	return parseProxyV1(string(line[:len(line)-2]))
}

func parseProxyV1(line string) (proxyHeader, error) {
	f := strings.Split(line, " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return proxyHeader{}, errNoProxyHeader
	}
	switch f[1] {
	case "UNKNOWN":
		return proxyHeader{Local: true}, nil
	case "TCP4", "TCP6":
	default:
		return proxyHeader{}, fmt.Errorf("PROXY v1: unknown protocol %q", f[1])
	}
	if len(f) != 6 {
		return proxyHeader{}, fmt.Errorf("PROXY v1: want 6 fields, got %d", len(f))
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	sp, err3 := parsePort(f[4])
	dp, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return proxyHeader{}, fmt.Errorf("PROXY v1: %w", err)
	}
	v4 := f[1] == "TCP4"
	if src.Is4() != v4 || dst.Is4() != v4 || src.Zone() != "" || dst.Zone() != "" {
		return proxyHeader{}, fmt.Errorf("PROXY v1: addresses do not match %s", f[1])
	}
	return proxyHeader{Src: netip.AddrPortFrom(src, sp), Dst: netip.AddrPortFrom(dst, dp)}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

func readProxyV2(r *bufio.Reader) (proxyHeader, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	if !bytes.Equal(hdr[:12], proxyV2Sig) {
		return proxyHeader{}, errNoProxyHeader
	}
	if hdr[12]>>4 != 2 {
		return proxyHeader{}, fmt.Errorf("PROXY v2: unknown version %d", hdr[12]>>4)
	}
	cmd := hdr[12] & 0xf
	if cmd > 1 {
		return proxyHeader{}, fmt.Errorf("PROXY v2: unknown command %d", cmd)
	}
	fam, proto := hdr[13]>>4, hdr[13]&0xf
	n := int(binary.BigEndian.Uint16(hdr[14:16]))
	var need int
	switch fam {
	case 1:
		need = 12
	case 2:
		need = 36
	}
	// Read only the address block; the TLVs after it are skipped unread.
	take := min(n, need)
	addr := make([]byte, take)
	if _, err := io.ReadFull(r, addr); err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY v2 addresses: %w", err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(n-take)); err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY v2 TLVs: %w", err)
	}
	if cmd == 0 || need == 0 || proto != 1 {
		// LOCAL (a health check), or a family or transport we do not use.
		return proxyHeader{Local: true}, nil
	}
	if n < need {
		return proxyHeader{}, fmt.Errorf("PROXY v2: address block of %d bytes, want %d", n, need)
	}
	alen := (need - 4) / 2
	src, _ := netip.AddrFromSlice(addr[:alen])
	dst, _ := netip.AddrFromSlice(addr[alen : 2*alen])
	sp := binary.BigEndian.Uint16(addr[2*alen:])
	dp := binary.BigEndian.Uint16(addr[2*alen+2:])
	return proxyHeader{Src: netip.AddrPortFrom(src, sp), Dst: netip.AddrPortFrom(dst, dp)}, nil
}
