package policy

import "context"

// Rule functions that ask the network, such as org_domain's DMARC tree
// walk, note their answers in the transaction: the journal keeps them,
// so that a replay answers the same without asking.

type lookupsKey struct{}

// withLookups lets the stage's rule functions reach c's lookups.
func (c *Conn) withLookups(ctx context.Context) context.Context {
	return context.WithValue(ctx, lookupsKey{}, c)
}

// Lookup returns find's answer for key in the transaction ctx belongs
// to. Live, it asks find and notes the answer in Facts.Lookups; a replay
// answers from the recorded ConnInfo.Lookups and asks find only for keys
// the record lacks (a new rule's). Outside a transaction it is find().
func Lookup(ctx context.Context, key string, find func() string) string {
	c, _ := ctx.Value(lookupsKey{}).(*Conn)
	if c == nil {
		return find()
	}
	if v, ok := c.info.Lookups[key]; ok {
		return v
	}
	if v, ok := c.facts.Lookups[key]; ok {
		return v
	}
	v := find()
	if c.facts.Lookups == nil {
		c.facts.Lookups = map[string]string{}
	}
	c.facts.Lookups[key] = v
	return v
}
