package cache

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Outage tests make the client library log every failed dial.
	RouteClientLogs(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
