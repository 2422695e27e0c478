package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionReadsVCSInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef"},
		{Key: "vcs.time", Value: "2026-12-03T07:00:00Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	got := versionLine(bi)
	if !strings.HasPrefix(got, "mailward devel (commit 0123456789abcdef of 2026-12-03T07:00:00Z, modified, go") {
		t.Errorf("version = %q", got)
	}
	bi = &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}
	if got := versionLine(bi); !strings.HasPrefix(got, "mailward v1.2.3 (commit unknown, go") {
		t.Errorf("go install …@v1.2.3: version = %q", got)
	}
}

func TestVersionHelpIsUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version", "--help"}, &out, &errb); code != 0 || out.Len() != 0 || !strings.Contains(errb.String(), "Usage: mailward version") {
		t.Errorf("version --help: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "mailward ") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}
