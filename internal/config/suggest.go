package config

import "slices"

// Suggest returns the candidate a mistyped word most likely meant, or ""
// when none is close enough to be a typo. Swapped neighbours count as one
// edit ("sfp" is "spf"), and short words allow fewer edits than long
// ones, so that "sfp" does not become "ip".
func Suggest(word string, cands []string) string {
	limit := min(2, max(1, len(word)/3))
	best, bestD := "", limit+1
	for _, c := range cands {
		if c == word {
			continue
		}
		d := Distance(word, c)
		if d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	return best
}

// Distance is the number of single-character insertions, deletions,
// substitutions and swaps of neighbours that turn a into b (optimal
// string alignment distance).
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows: the one before last is needed for swaps.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// keys lists a map's keys, sorted.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
