// Package rfc5322 holds the lexical pieces of RFC 5322 that more than one
// header parser needs.
package rfc5322

// CommentEnd returns the index just past the comment that opens at s[i]
// (which must be '('): comments nest, and a backslash quotes the next
// character. ok is false when the comment is not closed.
func CommentEnd(s string, i int) (end int, ok bool) {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		}
	}
	return 0, false
}
