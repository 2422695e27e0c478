package rules

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/mailward/mailward/policy"
)

// TestOptions set how rule tests run.
type TestOptions struct {
	// Settings are the engine's settings (thresholds, DMARC enforcement),
	// as the config gives them, so tests decide as production does.
	Settings policy.Settings
	// Lists are the lists the config declares.
	Lists map[string]ListConfig
	Options
}

// TestResult is one test case's outcome.
type TestResult struct {
	Name   string
	Pos    Pos
	Passed bool
	// Diffs say what differed from the expectation, one line each.
	Diffs []string
	// What happened.
	Action  policy.Action
	Stage   policy.Stage
	Matched []string
	Score   float64
}

// loadTests reads the tests written in the rule files and in testFiles.
func loadTests(b *built, testFiles []string, p *problems) []*testCase {
	var cases []*testCase
	for _, fs := range b.specs {
		cases = append(cases, parseTests(fs, b.names, p)...)
	}
	for _, f := range testFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			p.errorf(Pos{File: f}, "%v", err)
			continue
		}
		fs := parseFile(f, data, p)
		if fs == nil {
			continue
		}
		if len(fs.rules) > 0 {
			p.errorf(fs.src.pos(fs.rules[0]), "a _test.yaml file holds tests only; rules here are never loaded")
		}
		if len(fs.lists) > 0 {
			p.errorf(fs.lists[0].pos, "a _test.yaml file holds tests only; lists here are never loaded")
		}
		cases = append(cases, parseTests(fs, b.names, p)...)
	}
	return cases
}

// RunTests loads the rule files among paths (files, directories or
// globs) as one set and runs every test written in them or in the
// *_test.yaml files beside them, each through a policy.Engine whose
// checks say what the test assumes. The error reports files that did not
// load or tests that could not be read.
func RunTests(ctx context.Context, paths []string, to TestOptions) ([]TestResult, error) {
	var p problems
	ruleFiles, testFiles := expandPaths(paths, &p)
	if to.Logger == nil {
		// Monitor-mode matches are part of the report, not log lines.
		to.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := build(buildInput{files: ruleFiles, lists: to.Lists, listBase: to.BaseDir}, to.Options, &p)
	cases := loadTests(b, testFiles, &p)
	if err := p.list.err(); err != nil {
		return nil, err
	}
	settings := to.Settings
	if settings.Hostname == "" {
		settings.Hostname = "mailward.test"
	}
	results := make([]TestResult, 0, len(cases))
	for i, tc := range cases {
		// Each test counts its own rate limits, as if alone.
		tctx := withRateScope(ctx, fmt.Sprintf("test%d:", i))
		results = append(results, runTest(tctx, b.set, settings, to.Logger, tc))
	}
	return results, nil
}

// runTest plays one transaction through a real engine, driven as
// `mailward check` and a replay drive it.
func runTest(ctx context.Context, s *Set, settings policy.Settings, log *slog.Logger, tc *testCase) TestResult {
	e := policy.NewEngine(settings, &tc.checks, s, log)
	out, err := e.Drive(ctx, policy.Transaction{
		Conn: policy.ConnInfo{IP: tc.ip, Front: "test"},
		Helo: tc.helo, From: tc.mailFrom, Rcpts: tc.rcpts,
		Mail:   policy.MailInfo{AuthUser: tc.authUser, TLS: tc.tls, QueueID: tc.queueID},
		Header: tc.headers, Body: bytes.NewReader(tc.body),
	})
	res := TestResult{Name: tc.name, Pos: tc.pos}
	if err != nil {
		res.Diffs = []string{err.Error()}
		return res
	}
	v := out.Verdict
	res.Action, res.Stage, res.Score = v.Action, v.Stage, out.Facts.Score
	for _, m := range out.Matches {
		res.Matched = append(res.Matched, m.Rule)
	}
	res.Diffs = tc.expect.compare(v, res)
	res.Passed = len(res.Diffs) == 0
	return res
}
