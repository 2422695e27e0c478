package cache

// Rate limiting is GCRA, the generic cell rate algorithm: a leaky bucket
// kept as one number per key, the theoretical arrival time (TAT) of the
// next event were events spaced evenly.
//
// With limit events per window, each event is worth an interval
// T = window/limit and the bucket holds window. An event at time now is
// allowed when max(TAT, now) + T - window <= now; it then moves TAT to
// max(TAT, now) + T. So a quiet key allows a burst of limit events at
// once, and after that one event every T: limit per window on average,
// never more than limit at the same instant. A refused event changes
// nothing and learns when the next one would be allowed.
//
// Memory keeps TAT in nanoseconds; Redis keeps it in microseconds of the
// Redis server's clock (TIME), in a Lua script, so that every mailward of
// a fleet agrees. The key expires when TAT passes, as it then says
// nothing a missing key would not.

// gcra decides one event at now given the stored tat (0: none), with
// times in any one unit. It returns the TAT to store when allowed.
func gcra(now, tat int64, limit int, window int64) (newTAT int64, allowed bool, remaining int, retryAfter int64) {
	interval := window / int64(limit)
	if interval < 1 {
		interval = 1
	}
	if tat < now {
		tat = now
	}
	newTAT = tat + interval
	allowAt := newTAT - window
	if now < allowAt {
		return tat, false, 0, allowAt - now
	}
	rem := (now - allowAt) / interval
	if rem > int64(limit-1) {
		rem = int64(limit - 1)
	}
	return newTAT, true, int(rem), 0
}
