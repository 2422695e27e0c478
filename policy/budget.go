package policy

import (
	"runtime"
	"sync/atomic"
	"time"
)

// DefaultMessageCPU is the CPU the engine may spend on one message: its
// checks, rules, DKIM hashing and attachment scan together. Ordinary mail
// takes milliseconds; a 50 MiB message with two signatures, well under
// a second.
const DefaultMessageCPU = 5 * time.Second

// limitCounts counts the messages that passed a bound, by bound.
type limitCounts struct {
	cpu, mime atomic.Int64
	cpuUsed   atomic.Int64 // nanoseconds charged to messages
}

// OverLimits reports how many messages got the on_error verdict because
// they passed a bound: the CPU budget ("message_cpu") or the MIME
// structure's depth or part count ("mime").
func (e *Engine) OverLimits(limit string) int64 {
	switch limit {
	case "message_cpu":
		return e.limits.cpu.Load()
	case "mime":
		return e.limits.mime.Load()
	}
	return 0
}

// MessageCPU reports the CPU time charged to messages so far.
func (e *Engine) MessageCPU() time.Duration { return time.Duration(e.limits.cpuUsed.Load()) }

// charge runs work for the current message and adds the CPU time it
// takes to the message's account. The goroutine stays on its thread
// meanwhile, so that the thread's CPU clock is the work's: time spent
// waiting (on DNS, say) is not charged. Past the budget the message's
// content readers are closed, so the rest of the message costs nothing,
// and every later stage answers with the on_error verdict.
func (c *Conn) charge(work func()) {
	if !c.inMessage || c.overBudget {
		work()
		return
	}
	runtime.LockOSThread()
	start := threadCPU()
	defer func() {
		used := threadCPU() - start
		runtime.UnlockOSThread()
		c.cpu += used
		c.e.limits.cpuUsed.Add(int64(used))
		if budget := c.snap.settings.MessageCPU; c.cpu > budget {
			c.overBudget = true
			c.scan.close()
			c.e.limits.cpu.Add(1)
			c.e.log.Warn("message over its CPU budget: checks stopped", "queue_id", c.facts.QueueID,
				"front", c.info.Front, "client_ip", ipString(&c.facts), "cpu", c.cpu, "budget", budget)
		}
	}()
	work()
}
