package journal

import (
	"strings"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/config"
)

// Config is the `journal:` section of the config file.
type Config struct {
	// Path is the file lines are appended to; empty turns the journal off.
	// Rotated files sit beside it as NAME-TIME.EXT.
	Path string `yaml:"path"`
	// MaxSize rotates the file once it holds this many bytes.
	MaxSize int64 `yaml:"max_size"`
	// MaxAge rotates the file once its first line is this old.
	MaxAge cache.Duration `yaml:"max_age"`
	// MaxTotal bounds the bytes of all journal files; the oldest go first.
	MaxTotal int64 `yaml:"max_total"`
	// Queue is how many lines may wait to be written. When it is full
	// (a slow or full disk) lines are dropped and counted, never waited for.
	Queue int `yaml:"queue"`
	// OmitHeaders names header fields never written, e.g. Subject.
	OmitHeaders []string `yaml:"omit_headers"`
}

// The defaults: files of 64 MiB or a day, 1 GiB in all.
const (
	DefaultMaxSize  = 64 << 20
	DefaultMaxAge   = 24 * time.Hour
	DefaultMaxTotal = 1 << 30
	DefaultQueue    = 4096
)

// DefaultConfig is the journal off, with the limits it gets when a path is set.
func DefaultConfig() Config {
	return Config{MaxSize: DefaultMaxSize, MaxAge: cache.Duration(DefaultMaxAge), MaxTotal: DefaultMaxTotal, Queue: DefaultQueue}
}

// Enabled reports whether a journal is to be written.
func (c Config) Enabled() bool { return c.Path != "" }

// Validate reports every bad value as config.Problems, keys relative to
// the journal section.
func (c Config) Validate() error {
	var ps config.Problems
	bad := ps.Add
	if c.MaxSize < 4096 {
		bad("max_size", "%d: want at least 4096 bytes", c.MaxSize)
	}
	if c.MaxAge < cache.Duration(time.Minute) {
		bad("max_age", "%s: want at least 1m", c.MaxAge)
	}
	if c.MaxTotal < c.MaxSize {
		bad("max_total", "%d: want at least max_size (%d)", c.MaxTotal, c.MaxSize)
	}
	if c.Queue < 1 {
		bad("queue", "%d: want at least 1", c.Queue)
	}
	for _, h := range c.OmitHeaders {
		if h == "" || strings.ContainsAny(h, ": \t") {
			bad("omit_headers", "%q is not a header field name", h)
		}
	}
	return ps.Err()
}
