package journal

import (
	"bufio"
	"bytes"

	"fmt"
	segjson "github.com/segmentio/encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxLine bounds one line read back: a line is written with at most
// maxHeaderBytes of header fields, so anything far longer is not ours.
const maxLine = 1 << 20

// Line is one record read back with where it stands.
type Line struct {
	File string
	N    int // line number, from 1
	*Record
	c *checked
}

// Pos is file:line.
func (l *Line) Pos() string { return fmt.Sprintf("%s:%d", l.File, l.N) }

// Problem is a line that could not be read; it is skipped.
type Problem struct {
	File string
	N    int
	Err  error
}

func (p Problem) Error() string { return fmt.Sprintf("%s:%d: %v", p.File, p.N, p.Err) }

// Expand turns the --journal arguments into files in time order: a
// file, a directory (its *.jsonl files) or a glob.
func Expand(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		switch {
		case err == nil && st.IsDir():
			names, _ := filepath.Glob(filepath.Join(globEscape(a), "*.jsonl"))
			if len(names) == 0 {
				return nil, fmt.Errorf("%s: no journal files (*.jsonl) in the directory", a)
			}
			out = append(out, sortJournal(names)...)
		case err == nil:
			out = append(out, a)
		case strings.ContainsAny(a, "*?["):
			names, gerr := filepath.Glob(a)
			if gerr != nil || len(names) == 0 {
				return nil, fmt.Errorf("%s: no file matches", a)
			}
			out = append(out, sortJournal(names)...)
		default:
			return nil, fmt.Errorf("reading journal: %w", err)
		}
	}
	return slices.Compact(out), nil
}

// sortJournal orders names so that rotated files (NAME-TIME.jsonl) come
// before the file still written (NAME.jsonl).
func sortJournal(names []string) []string {
	slices.SortFunc(names, func(a, b string) int {
		ka, kb := strings.TrimSuffix(a, filepath.Ext(a)), strings.TrimSuffix(b, filepath.Ext(b))
		switch {
		case strings.HasPrefix(ka, kb+"-"):
			return -1
		case strings.HasPrefix(kb, ka+"-"):
			return 1
		}
		return strings.Compare(a, b)
	})
	return names
}

// Read reads every line of the files in order and calls fn with each
// one that can be replayed. Lines that cannot are reported and skipped:
// a torn last line after a full disk must not hide the rest. The error
// is about reading a file or what fn returns.
func Read(files []string, fn func(*Line) error) ([]Problem, error) {
	return Each(files, func(*Line) (struct{}, error) { return struct{}{}, nil },
		func(l *Line, _ struct{}) error { return fn(l) })
}

// scanFile calls fn with each line of r (numbered from 1) or the reason
// it could not be read, until fn returns false. Blank lines are skipped.
func scanFile(name string, r io.Reader, fn func(n int, raw []byte, err error) bool) (bool, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		switch {
		case err == io.EOF:
			return true, nil
		case err == errLong:
		case err != nil:
			return false, fmt.Errorf("reading %s: %w", name, err)
		case len(bytes.TrimSpace(line)) == 0:
			continue
		}
		if !fn(n, line, err) {
			return false, nil
		}
	}
}

var errLong = fmt.Errorf("line longer than %d bytes: skipped", maxLine)

// readLine reads one line, bounded by maxLine; a longer one is consumed
// and reported. A last line without its line end is returned as it is.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	long := false
	for {
		part, err := br.ReadSlice('\n')
		if !long && len(line)+len(part) > maxLine {
			long, line = true, nil
		}
		if !long {
			line = append(line, part...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case long && (err == nil || err == io.EOF):
			return nil, errLong
		case err == io.EOF && len(line) > 0:
			return line, nil
		}
		return line, err
	}
}

// Parse reads one journal line.
func Parse(line []byte) (*Line, error) {
	var r Record
	if err := segjson.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("not a journal line: %v", err)
	}
	c, err := r.decode()
	if err != nil {
		return nil, err
	}
	return &Line{Record: &r, c: c}, nil
}
