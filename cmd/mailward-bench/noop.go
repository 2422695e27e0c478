package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// runNoopMilter serves a milter that answers continue to everything until
// interrupted: attach it to an MTA to measure the MTA with a milter that
// costs nothing, beside the same MTA with mailward.
func runNoopMilter(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("noop-milter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8892", "loopback `ADDR` to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, stop, err := listenNoopMilter(*listen)
	if err != nil {
		return fmt.Errorf("noop-milter: %w", err)
	}
	defer stop()
	fmt.Fprintf(stderr, "no-op milter on %s\n", addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}
