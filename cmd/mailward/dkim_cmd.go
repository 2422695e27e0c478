package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/signing"
)

const dkimUsage = `Usage: mailward dkim COMMAND [flags]

Commands:
  keygen --domain D --selector S [--ed25519]   make a signing key and print its DNS record
  testkey [--config FILE]                      check that DNS publishes every key of the key table

Run 'mailward dkim COMMAND --help' for a command's flags.
`

func runDKIMCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dkimUsage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "testkey":
		return runTestkey(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, dkimUsage)
		return 0
	}
	fmt.Fprintf(stderr, "mailward dkim: unknown command %q\n\n%s", args[0], dkimUsage)
	return 2
}

func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkim keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "the signing `DOMAIN` (d=)")
	selector := fs.String("selector", "", "the `SELECTOR` (s=), e.g. 2026-12")
	ed := fs.Bool("ed25519", false, "make an Ed25519 key (RFC 8463) instead of RSA")
	bits := fs.Int("bits", signing.MinRSABits, "RSA key size")
	out := fs.String("out", "", "key `FILE` to write (default DOMAIN.SELECTOR.key); an existing file is not overwritten")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward dkim keygen --domain D --selector S [--ed25519] [--bits N] [--out FILE]\n\nWrites a private key (PKCS#8 PEM, mode 0600) and prints the TXT record\nto publish and the key table entry to add.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *domain == "" || *selector == "" {
		fmt.Fprintln(stderr, "mailward dkim keygen: --domain and --selector are required")
		return 2
	}
	probe := signing.Config{Keys: []signing.KeyConfig{{Domain: *domain, Selector: *selector, KeyFile: "x"}}}
	for _, p := range probe.Problems() {
		fmt.Fprintf(stderr, "mailward dkim keygen: %s\n", p.Msg)
		return 2
	}
	if *out == "" {
		*out = *domain + "." + *selector + ".key"
	}
	k, err := signing.GenerateKey(*ed, *bits)
	if err != nil {
		fmt.Fprintf(stderr, "mailward dkim keygen: %v\n", err)
		return 2
	}
	pemData, err := signing.MarshalKey(k)
	if err == nil {
		err = writeNewFile(*out, pemData)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailward dkim keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "; key written to %s; publish this record:\n%s\n\n", *out, signing.ZoneLine(*selector, *domain, k))
	fmt.Fprintf(stdout, "# then add to the config's signing.keys:\n#   - {domain: %s, selector: %s, key_file: %s}\n", *domain, *selector, *out)
	return 0
}

// writeNewFile writes a private key file that must not exist yet.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing key: %w", err)
	}
	return nil
}

func runTestkey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkim testkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "the mailward config `FILE` whose signing.keys are checked, over its dns settings")
	domain := fs.String("domain", "", "for a \"*\" entry without signing_domain: the `DOMAIN` to check it under")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward dkim testkey --config FILE [--domain D]\n\nLooks up each key table entry's selector._domainkey record and checks that\nit publishes the key file's public key, as opendkim-testkey does. Exit 1 if\nany does not.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	tab, err := signing.Load(cfg.Signing, cfg.baseDir(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if !tab.Enabled() {
		fmt.Fprintf(stderr, "mailward dkim testkey: %s has no signing.keys\n", cfg.file)
		return 1
	}
	res, err := resolver.New(cfg.DNS)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: setting up DNS: %v\n", err)
		return 1
	}
	lookup := func(ctx context.Context, name string) ([]string, error) {
		ans, err := res.Query(ctx, name, dns.TypeTXT)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range ans.RRs {
			if txt, ok := rr.(*dns.TXT); ok {
				out = append(out, strings.Join(txt.Txt, ""))
			}
		}
		return out, nil
	}
	failed := 0
	for _, k := range tab.Keys() {
		d := k.SDID(strings.ToLower(*domain))
		label := fmt.Sprintf("%s._domainkey.%s (%s)", k.Selector, d, k.Domain)
		var err error
		switch {
		case k.Err != nil:
			err = k.Err
		case d == "":
			err = errors.New("entry \"*\" signs with the From domain: give --domain or signing_domain to check it")
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err = signing.CheckPublished(ctx, lookup, k.Signer(), k.Selector, d)
			cancel()
		}
		if err != nil {
			failed++
			fmt.Fprintf(stdout, "%s: FAIL: %v\n", label, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: key OK (%s)\n", label, k.Algorithm())
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// parseFlags parses a subcommand's flags; done says to exit with code.
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "mailward %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, true
	}
	return 0, false
}
