package journal

import (
	"fmt"
	"os"
	"runtime"
	"sync"
)

// Each reads the files and calls work for every line that parses, on
// as many goroutines as there are CPUs, then done with each result on
// one goroutine in journal order. Replay is CPU-bound: decoding a line
// and driving the engine each cost more than reading. Lines that do not
// parse are reported, in order, and skipped. The error is the first of
// reading a file, work or done; it stops the reading.
func Each[T any](files []string, work func(*Line) (T, error), done func(*Line, T) error) ([]Problem, error) {
	workers := runtime.GOMAXPROCS(0)
	type job struct {
		seq  int
		file string
		n    int
		raw  []byte
		err  error // a line that could not be read
	}
	type result struct {
		seq  int
		line *Line
		val  T
		prob *Problem
		err  error
	}
	jobs := make(chan job, 64*workers)
	results := make(chan result, 64*workers)
	stop := make(chan struct{})
	var readErr error
	go func() {
		defer close(jobs)
		seq := 0
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				readErr = fmt.Errorf("reading journal: %w", err)
				return
			}
			_, err = scanFile(name, f, func(n int, raw []byte, lerr error) bool {
				select {
				case jobs <- job{seq: seq, file: name, n: n, raw: raw, err: lerr}:
					seq++
					return true
				case <-stop:
					return false
				}
			})
			f.Close()
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := result{seq: j.seq}
				if j.err == nil {
					var l *Line
					l, j.err = Parse(j.raw)
					if j.err == nil {
						l.File, l.N = j.file, j.n
						r.line = l
						r.val, r.err = work(l)
					}
				}
				if j.err != nil {
					r.prob = &Problem{File: j.file, N: j.n, Err: j.err}
				}
				results <- r
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	var problems []Problem
	var firstErr error
	pending := map[int]result{}
	next := 0
	for r := range results {
		pending[r.seq] = r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if firstErr != nil {
				continue
			}
			switch {
			case r.prob != nil:
				problems = append(problems, *r.prob)
			case r.err != nil:
				firstErr = fmt.Errorf("%s: %w", r.line.Pos(), r.err)
			default:
				firstErr = done(r.line, r.val)
			}
			if firstErr != nil {
				close(stop)
			}
		}
	}
	if firstErr == nil {
		firstErr = readErr
	}
	return problems, firstErr
}
