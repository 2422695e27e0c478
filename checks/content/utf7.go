package content

import (
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/transform"
)

// utf7Decoder reads UTF-7 (RFC 2152) to UTF-8. golang.org/x/text names
// the charset but has no decoder for it, and a part read as UTF-8 would
// hide its text and links from the scan. ASCII stands for itself; "+"
// starts base64 of UTF-16 that ends at the first character outside the
// alphabet ("-" is then dropped); "+-" is "+". What is ill-formed (a
// byte over 0x7F, a lone surrogate, bits left over at the end of a
// shift) becomes U+FFFD. It holds a few bits between calls and takes
// each byte once.
type utf7Decoder struct {
	shift bool   // inside "+...": base64
	fresh bool   // right after the "+"
	bits  uint32 // base64 bits not yet a UTF-16 code unit
	nbits int
	high  rune // a high surrogate waiting for its low half, or 0
}

func (d *utf7Decoder) Reset() { *d = utf7Decoder{} }

// Transform implements transform.Transformer.
func (d *utf7Decoder) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		// The most one byte can give: U+FFFD for a shift ended badly,
		// then the byte, itself or U+FFFD.
		if len(dst)-nDst < 2*utf8.UTFMax {
			return nDst, nSrc, transform.ErrShortDst
		}
		c := src[nSrc]
		nSrc++
		if d.shift {
			if v := b64val[c]; v != 0xFF {
				d.fresh = false
				d.bits = d.bits<<6 | uint32(v)
				d.nbits += 6
				if d.nbits >= 16 {
					d.nbits -= 16
					unit := rune(d.bits >> d.nbits)
					d.bits &= 1<<d.nbits - 1
					nDst += d.unit(dst[nDst:], unit)
				}
				continue
			}
			fresh := d.fresh
			nDst += d.endShift(dst[nDst:])
			if c == '-' {
				if fresh {
					dst[nDst] = '+'
					nDst++
				}
				continue
			}
			if fresh {
				// "+" then neither base64 nor "-".
				nDst += utf8.EncodeRune(dst[nDst:], utf8.RuneError)
			}
		}
		switch {
		case c == '+':
			d.shift, d.fresh = true, true
		case c < utf8.RuneSelf:
			dst[nDst] = c
			nDst++
		default:
			nDst += utf8.EncodeRune(dst[nDst:], utf8.RuneError)
		}
	}
	if atEOF && d.shift {
		if len(dst)-nDst < 2*utf8.UTFMax {
			return nDst, nSrc, transform.ErrShortDst
		}
		fresh := d.fresh
		nDst += d.endShift(dst[nDst:])
		if fresh {
			nDst += utf8.EncodeRune(dst[nDst:], utf8.RuneError)
		}
	}
	return nDst, nSrc, nil
}

// unit writes what a UTF-16 code unit completes.
func (d *utf7Decoder) unit(dst []byte, u rune) int {
	n := 0
	if d.high != 0 {
		h := d.high
		d.high = 0
		if utf16.IsSurrogate(u) && u >= 0xDC00 {
			return utf8.EncodeRune(dst, utf16.DecodeRune(h, u))
		}
		n = utf8.EncodeRune(dst, utf8.RuneError)
	}
	switch {
	case 0xD800 <= u && u < 0xDC00:
		d.high = u
	case utf16.IsSurrogate(u):
		n += utf8.EncodeRune(dst[n:], utf8.RuneError)
	default:
		n += utf8.EncodeRune(dst[n:], u)
	}
	return n
}

// endShift ends a shift: a high surrogate without its low half, or bits
// that are more than padding, are one U+FFFD.
func (d *utf7Decoder) endShift(dst []byte) int {
	bad := d.high != 0 || d.bits != 0 || d.nbits >= 6
	d.shift, d.fresh, d.bits, d.nbits, d.high = false, false, 0, 0, 0
	if bad {
		return utf8.EncodeRune(dst, utf8.RuneError)
	}
	return 0
}
