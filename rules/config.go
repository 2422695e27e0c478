package rules

import (
	"context"
	"log/slog"

	"github.com/mailward/mailward/policy"
)

// Config says where the rules and their lists are. The main config holds
// it under `rules:`.
type Config struct {
	// Files are paths or globs of rule files. Files named *_test.yaml hold
	// tests and are skipped.
	Files []string `yaml:"files"`
	// Lists are named list files that rules use with in_list and in_cidr.
	Lists map[string]ListConfig `yaml:"lists"`
}

// ListConfig declares one list file: one entry a line, # starts a comment.
// It reads the same under `rules: lists:`, a top-level `lists:` or a rule
// file's own `lists:`.
type ListConfig struct {
	File string `yaml:"file"`
	// Type is ip (addresses and CIDRs), domain (names, *.name for every
	// name below), address (user@domain, @domain, @*.domain) or regexp.
	Type string `yaml:"type"`
}

// Options are what the program around the rules provides.
type Options struct {
	// BaseDir resolves relative paths in Config, usually the config file's
	// directory. Lists a rule file declares are relative to that file.
	BaseDir string
	// OrgDomain finds a domain's organizational domain for org_domain().
	// Nil uses the public suffix list built into the binary.
	OrgDomain func(ctx context.Context, domain string) string
	// Functions are extra functions rules may call, such as ones that
	// need a cache.
	Functions []Func
	// Logger receives monitor-mode matches and evaluation errors.
	Logger *slog.Logger
	// DomainZones are the DNS lists queried with domain names (the
	// config's dnsbl.domain_zones). Their answers join dnsbl at helo and
	// mail, so a rule reading them runs at mail.
	DomainZones []string
}

// Func is a function rules may call besides the built-in ones: the place
// for functions that need the transaction's context or shared state, such
// as a rate limit kept in the cache.
type Func struct {
	// Name is how rules call it; it must not clash with a variable or a
	// built-in function.
	Name string
	// Types are the signatures rules may call it with, context left out,
	// e.g. new(func(string, int, string) bool). At least one is required:
	// calls are type-checked at load.
	Types []any
	// Stage is the earliest stage at which it can run; rules calling it
	// run no earlier.
	Stage policy.Stage
	// Fn is called with the transaction's context and the rule's
	// arguments. An error makes the rule not match and is counted.
	Fn func(ctx context.Context, args ...any) (any, error)
}
