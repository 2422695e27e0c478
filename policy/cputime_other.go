//go:build !linux

package policy

import "time"

var clockBase = time.Now()

// threadCPU stands in with the wall clock where no per-thread CPU clock
// is at hand: a budget then bounds time rather than CPU.
func threadCPU() time.Duration { return time.Since(clockBase) }
