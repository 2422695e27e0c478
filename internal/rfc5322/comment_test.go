package rfc5322

import "testing"

func TestCommentEnd(t *testing.T) {
	for _, tc := range []struct {
		s   string
		end int
		ok  bool
	}{
		{"(a) x", 3, true},
		{"(a (nested) b)x", 14, true},
		{`(quoted \) paren)x`, 17, true},
		{"(open", 0, false},
		{`(trailing \`, 0, false},
	} {
		end, ok := CommentEnd(tc.s, 0)
		if end != tc.end || ok != tc.ok {
			t.Errorf("CommentEnd(%q) = %d, %v; want %d, %v", tc.s, end, ok, tc.end, tc.ok)
		}
	}
}
