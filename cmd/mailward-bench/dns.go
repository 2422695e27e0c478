package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/mailward/mailward/internal/testenv"
)

// runDNS serves a corpus's zone until interrupted, so that mailward can be
// pointed at it with dns.servers.
func runDNS(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	corpus := fs.String("corpus", "", "corpus `DIR` made by gen")
	listen := fs.String("listen", "127.0.0.1:5300", "loopback `ADDR` to serve on (UDP and TCP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *corpus == "" {
		fs.Usage()
		return fmt.Errorf("--corpus is required")
	}
	zone, err := os.ReadFile(filepath.Join(*corpus, "zone.txt"))
	if err != nil {
		return fmt.Errorf("reading corpus zone: %w", err)
	}
	srv, err := testenv.NewDNSServer(*listen, string(zone))
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(stderr, "serving %s on %s\n", filepath.Join(*corpus, "zone.txt"), srv.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}
