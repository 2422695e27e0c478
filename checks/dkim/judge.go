package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"

	"github.com/mailward/mailward/checks/resolver"
)

// report turns each signature's state into a result.
func (v *Verifier) report(waitErr error) []Result {
	if len(v.sigs) == 0 {
		return nil
	}
	out := make([]Result, len(v.sigs))
	tags := shortSignatures(v.sigs)
	sums := map[*bodyHasher][]byte{}
	for i, st := range v.sigs {
		r := &out[i]
		r.Domain, r.Selector, r.Algorithm = st.sig.Domain, st.sig.Selector, st.sig.Algorithm
		r.Identifier, r.Signature = st.sig.Identifier, tags[i]
		r.Result, r.Reason = v.judge(i, st, waitErr, sums)
	}
	return out
}

func (v *Verifier) judge(i int, st *sigState, waitErr error, sums map[*bodyHasher][]byte) (result, reason string) {
	limit := v.c.opts.MaxSignatures
	switch {
	case i >= limit:
		return "none", fmt.Sprintf("not checked: over the limit of %d signatures", limit)
	case v.hdrOver:
		return "neutral", fmt.Sprintf("not verified: header block over %d bytes", maxHeader)
	case v.over:
		return "neutral", fmt.Sprintf("not verified: message over max_size (%d bytes)", v.c.opts.MaxSize)
	case st.err != nil:
		return "permerror", st.err.Error()
	case v.manyHdrs > 0:
		return "neutral", fmt.Sprintf("not verified: %d header fields, more than %d", v.manyHdrs, MaxHeaderFields)
	case st.result != "":
		return st.result, st.reason
	case v.stopped != nil:
		return "temperror", "verification stopped: " + v.stopped.Error()
	case waitErr != nil:
		return "temperror", "verification did not finish: " + waitErr.Error()
	case !st.looked:
		// start stopped before this signature: the context had ended.
		return "temperror", fmt.Sprintf("verification did not finish: %v", v.ctx.Err())
	}
	key, result, reason := v.key(st)
	if key == nil {
		return result, reason
	}
	sum, ok := sums[st.body]
	if !ok {
		sum = st.body.sum()
		sums[st.body] = sum
	}
	if subtle.ConstantTimeCompare(sum, st.sig.bodyHash) != 1 {
		return "fail", "body hash did not verify"
	}
	switch pub := key.pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, st.headerHash, st.sig.sig); err != nil {
			return "fail", "signature did not verify"
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, st.headerHash, st.sig.sig) {
			return "fail", "signature did not verify"
		}
	}
	return "pass", ""
}

// key reads the key a signature's look-up found and checks that it may
// verify that signature; on any problem it returns nil and the result.
func (v *Verifier) key(st *sigState) (k *Key, result, reason string) {
	sig := st.sig
	switch err := st.keyErr; {
	case err != nil && resolver.IsNotFound(err):
		return nil, "permerror", "no key for signature: " + err.Error()
	case err != nil:
		return nil, "temperror", "key unavailable: " + err.Error()
	case len(st.txts) == 0:
		return nil, "permerror", "no key for signature: no TXT record"
	case len(st.txts) > 1:
		// RFC 6376 section 3.6.2.2 leaves several records undefined.
		return nil, "permerror", fmt.Sprintf("%d TXT records found for the key, not one", len(st.txts))
	}
	k, err := ParseKey(st.txts[0])
	switch {
	case err != nil:
		return nil, "permerror", "bad key record: " + err.Error()
	case k.Revoked:
		return nil, "permerror", "key revoked (empty p=)"
	case !strings.HasPrefix(sig.Algorithm, k.Type+"-"):
		return nil, "permerror", fmt.Sprintf("key type k=%s does not match a=%s", k.Type, sig.Algorithm)
	case k.Hashes != nil && !slices.Contains(k.Hashes, "sha256"):
		return nil, "permerror", "key does not allow sha256 (h=)"
	case k.Services != nil && !slices.Contains(k.Services, "email") && !slices.Contains(k.Services, "*"):
		return nil, "permerror", "key is not for email (s=)"
	case k.Strict && !strings.EqualFold(strings.TrimSuffix(sig.Identifier[strings.LastIndexByte(sig.Identifier, '@')+1:], "."), sig.Domain):
		return nil, "permerror", "key has t=s and i= is a subdomain of d="
	case k.Type == "rsa" && k.Bits < v.c.opts.MinRSABits:
		return nil, "fail", fmt.Sprintf("RSA key of %d bits is under the minimum of %d (RFC 8301)", k.Bits, v.c.opts.MinRSABits)
	}
	return k, "", ""
}

// shortSignatures returns, for header.b (RFC 6008), the shortest prefix of
// each b= value, at least 8 characters, that tells it from the others.
// Sorted, a value need only be told from its neighbours, so the cost is
// n log n however many signature fields the sender wrote.
func shortSignatures(sigs []*sigState) []string {
	order := make([]int, len(sigs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(sigs[a].sig.B, sigs[b].sig.B) })
	out := make([]string, len(sigs))
	for k, i := range order {
		b := sigs[i].sig.B
		n := 0
		if k > 0 {
			n = max(n, commonPrefix(b, sigs[order[k-1]].sig.B)+1)
		}
		if k+1 < len(order) {
			n = max(n, commonPrefix(b, sigs[order[k+1]].sig.B)+1)
		}
		out[i] = b[:min(max(n, 8), len(b))]
	}
	return out
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
