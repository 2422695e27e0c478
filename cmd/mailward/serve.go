package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy/milter"
)

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config `FILE` (default: built-in defaults: milter on inet:127.0.0.1:8891, system DNS, memory cache, no rules)")
	checkOnly := fs.Bool("check-config", false, "validate the config and its rule files, then exit")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward serve [--config FILE] [--check-config]\n\nRuns the filter until SIGTERM; SIGHUP reloads the config and rules.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailward serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	parts, err := buildParts(context.Background(), cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if *checkOnly {
		fmt.Fprintf(stdout, "%s: OK (%s)\n", cfg.file, parts.summary())
		return 0
	}
	if err := serve(cfg, *file, parts, log); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

func serve(cfg *Config, file string, parts *parts, log *slog.Logger) error {
	engine := policy.NewEngine(cfg.settings(), parts.checker, parts.rules, log)
	mode, _ := cfg.socketMode()
	ln, err := milter.Listen(cfg.Milter.Listen, mode)
	if err != nil {
		return err
	}
	ms := milter.New(engine, cfg.Timeouts.Milter, log)
	errc := make(chan error, 1)
	go func() { errc <- ms.Serve(ln) }()
	log.Info("mailward started", "milter", cfg.Milter.Listen, "config", cfg.file, "loaded", parts.summary())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("milter listener: %w", err)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				cfg, parts = reload(file, cfg, parts, engine, log)
				continue
			}
			log.Info("shutting down: finishing transactions in flight", "signal", sig.String(), "timeout", cfg.Timeouts.Shutdown)
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Shutdown)
			err := ms.Shutdown(ctx)
			cancel()
			parts.close()
			if err != nil {
				log.Warn("shutdown", "err", err)
			}
			log.Info("mailward stopped")
			return nil
		}
	}
}

// reload reads the config and rules again; on any error the running ones
// stay and the error is logged with its position.
func reload(file string, old *Config, oldParts *parts, engine *policy.Engine, log *slog.Logger) (*Config, *parts) {
	cfg, err := loadConfig(file)
	if err == nil {
		var p *parts
		p, err = buildParts(context.Background(), cfg, log)
		if err == nil {
			if cfg.Milter.Listen != old.Milter.Listen {
				log.Warn("milter.listen changed; it takes effect at restart", "running", old.Milter.Listen, "new", cfg.Milter.Listen)
			}
			engine.Update(cfg.settings(), p.checker, p.rules)
			oldParts.close()
			log.Info("reloaded", "config", cfg.file, "loaded", p.summary())
			return cfg, p
		}
	}
	log.Error("reload failed; keeping the running config and rules", "err", err)
	return old, oldParts
}
