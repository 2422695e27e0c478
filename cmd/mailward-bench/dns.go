package main

import (
	"errors"
	"io"
)

func runDNS(args []string, stderr io.Writer) error {
	return errors.New("dns: the corpus DNS server is not built yet")
}
