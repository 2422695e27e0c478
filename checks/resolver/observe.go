package resolver

import (
	"sync"
	"time"
)

// QueryObserver is told of each query that went to the servers (not of
// cache hits): its type ("A", "TXT"), how long it took, and its error.
type QueryObserver func(qtype string, took time.Duration, err error)

// Observe has every query that goes to the servers reported to fn, for
// metrics.
func (r *Resolver) Observe(fn QueryObserver) { r.observe.Store(&fn) }

// SkipSilentServers makes a server that let every attempt of one query
// time out count as down from then on: later queries skip it, and fail at
// once when no server is left. It suits a one-shot run such as mailward
// check, which should give up on a dead server within its timeout rather
// than wait it out at every stage; a long-running filter must not, since
// one slow name would fail the queries of every other.
func (r *Resolver) SkipSilentServers() { r.silent = &sync.Map{} }
