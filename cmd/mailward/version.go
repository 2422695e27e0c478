package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...";
// otherwise they come from what go build records of the module and of the
// VCS checkout it was built in.
var (
	version = ""
	commit  = ""
)

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward version\n\nPrints the version, the commit it was built from (with its time, and\n\"modified\" if the checkout had changes) and the Go toolchain.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailward version: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(bi))
	return 0
}

// buildVersion is the version and commit versionLine gives.
func buildVersion() (string, string) {
	bi, _ := debug.ReadBuildInfo()
	v, c, _, _ := describeBuild(bi)
	return v, c
}

// versionLine describes the build.
func versionLine(bi *debug.BuildInfo) string {
	v, c, when, modified := describeBuild(bi)
	out := fmt.Sprintf("mailward %s (commit %s", v, c)
	if when != "" {
		out += " of " + when
	}
	if modified {
		out += ", modified"
	}
	return out + fmt.Sprintf(", %s %s/%s)", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// describeBuild reads -ldflags values first, then the module version (set
// by go install …@version) and the VCS settings go build records.
func describeBuild(bi *debug.BuildInfo) (v, c, when string, modified bool) {
	v, c = version, commit
	if bi != nil {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c, when, modified
}
