package resolver

import (
	"errors"
	"fmt"
)

// Every error from the resolver wraps exactly one of these kinds, so a
// caller can tell "no such data" from "could not find out".
var (
	// ErrNXDomain: the name does not exist (or is not a valid domain name).
	ErrNXDomain = errors.New("no such domain")
	// ErrNoData: the name exists but has no records of the asked type.
	ErrNoData = errors.New("no records of that type")
	// ErrServFail: the server answered SERVFAIL or another failure code.
	ErrServFail = errors.New("server failure")
	// ErrTimeout: no answer in time, or the caller's context ended.
	ErrTimeout = errors.New("timed out")
	// ErrRefused: the server refused the query.
	ErrRefused = errors.New("query refused")
	// ErrNetwork: the query could not be sent or the answer was unusable.
	ErrNetwork = errors.New("network error")
)

// IsTemporary reports whether err is a failure that may go away on retry:
// SERVFAIL, timeout, REFUSED or a network problem.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrServFail) || errors.Is(err, ErrTimeout) ||
		errors.Is(err, ErrRefused) || errors.Is(err, ErrNetwork)
}

// IsNotFound reports whether err says the data does not exist: NXDOMAIN or NODATA.
func IsNotFound(err error) bool {
	return errors.Is(err, ErrNXDomain) || errors.Is(err, ErrNoData)
}

// lookupError names the query and keeps the kind for errors.Is.
type lookupError struct {
	name  string
	qtype string
	kind  error // one of the sentinels
	cause error // underlying error, if any
}

func (e *lookupError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("looking up %s %s: %v: %v", e.name, e.qtype, e.kind, e.cause)
	}
	return fmt.Sprintf("looking up %s %s: %v", e.name, e.qtype, e.kind)
}

func (e *lookupError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}
