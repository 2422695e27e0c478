package deliver

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func planOne(t *testing.T, f *fixture, uri string) Destination {
	t.Helper()
	ds, err := f.sender.Plan(context.Background(), testReport(uri))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("Plan(%s) = %+v, want one destination", uri, ds)
	}
	return ds[0]
}

func TestExternalDestinationVerification(t *testing.T) {
	f := newFixture(t, nil, nil)
	for _, tc := range []struct {
		uri, address string
		accepted     bool
		reason       string
	}{
		{"mailto:dmarc@example.com", "dmarc@example.com", true, ""},
		// Same organization: no confirmation needed.
		{"mailto:dmarc@reports.example.com", "dmarc@reports.example.com", true, ""},
		{"mailto:agg@example.net", "agg@example.net", true, ""},
		{"mailto:agg@wild.example", "agg@wild.example", true, ""},
		{"mailto:agg@example.org", "agg@example.org", false, "not v=DMARC1"},
		{"mailto:agg@nothing.example", "agg@nothing.example", false, "no TXT record at example.com._report._dmarc.nothing.example"},
		{"mailto:agg@override.example", "inbox@override.example", true, ""},
		{"mailto:agg@elsewhere.example", "agg@elsewhere.example", false, "attacker.example"},
		{"https://example.com/reports", "", false, "only mailto"},
		{"mailto:not-an-address", "", false, "not an email address"},
	} {
		d := planOne(t, f, tc.uri)
		if d.Accepted != tc.accepted || d.Address != tc.address || !strings.Contains(d.Reason, tc.reason) || d.Temporary {
			t.Errorf("%s: %+v, want accepted %v to %q, reason with %q", tc.uri, d, tc.accepted, tc.address, tc.reason)
		}
	}
	if n := f.dns.Queries("example.com._report._dmarc.example.net", dns.TypeTXT); n != 1 {
		t.Errorf("%d confirmation queries at example.net, want 1", n)
	}
	if n := f.dns.Queries("example.com._report._dmarc.example.com", dns.TypeTXT); n != 0 {
		t.Errorf("%d confirmation queries for a destination in the policy domain's organization, want 0", n)
	}
}

func TestRefusedDestinationGetsNothing(t *testing.T) {
	f := newFixture(t, nil, nil)
	if err := f.sender.Send(context.Background(), testReport("mailto:agg@example.org", "mailto:agg@example.net")); err != nil {
		t.Fatal(err)
	}
	msgs := f.relay.messages()
	if len(msgs) != 1 || msgs[0].To[0] != "agg@example.net" {
		t.Fatalf("relayed %+v, want one message to agg@example.net only", msgs)
	}
}

func TestVerificationTemperrorIsRetriedNotRefused(t *testing.T) {
	f := newFixture(t, nil, nil)
	const name = "example.com._report._dmarc.flaky.example"
	f.dns.ServFail(name)
	d := planOne(t, f, "mailto:agg@flaky.example")
	if d.Accepted || !d.Temporary {
		t.Fatalf("Plan under SERVFAIL: %+v, want temporary, neither accepted nor refused", d)
	}
	// The fault clears while Send waits to retry: the report goes out.
	f.onWait = func(int) { f.dns.Reset(name) }
	if err := f.sender.Send(context.Background(), testReport("mailto:agg@flaky.example")); err != nil {
		t.Fatal(err)
	}
	if msgs := f.relay.messages(); len(msgs) != 1 || msgs[0].To[0] != "agg@flaky.example" {
		t.Fatalf("relayed %+v, want the report to agg@flaky.example after the retry", msgs)
	}
}

func TestVerificationTemperrorOutlastingRetries(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.Retries = 1 })
	f.dns.ServFail("example.com._report._dmarc.flaky.example")
	err := f.sender.Send(context.Background(), testReport("mailto:agg@flaky.example", "mailto:dmarc@example.com"))
	var se *SendError
	if !errors.As(err, &se) || !se.Temporary() || len(se.Failed) != 1 || se.Failed[0].Address != "agg@flaky.example" {
		t.Fatalf("Send: %v, want a temporary *SendError for agg@flaky.example", err)
	}
	// The other destination got its report once, not once per retry.
	if msgs := f.relay.messages(); len(msgs) != 1 || msgs[0].To[0] != "dmarc@example.com" {
		t.Fatalf("relayed %+v, want one message to dmarc@example.com", msgs)
	}
}

func TestSizeLimits(t *testing.T) {
	f := newFixture(t, nil, nil)
	p, err := newPayload(testReport(), f.sender.domain)
	if err != nil {
		t.Fatal(err)
	}
	size := len(p.gz)
	for _, tc := range []struct {
		uri      string
		accepted bool
	}{
		{"mailto:dmarc@example.com!10m", true},
		{"mailto:dmarc@example.com!1k", true},
		{"mailto:dmarc@example.com!" + strconv.Itoa(size), true},
		{"mailto:dmarc@example.com!" + strconv.Itoa(size-1), false},
		{"mailto:dmarc@example.com!0", false},
		{"mailto:dmarc@example.com!99999999999999999999t", true},
	} {
		d := planOne(t, f, tc.uri)
		if d.Accepted != tc.accepted {
			t.Errorf("%s (report %d bytes compressed): %+v, want accepted %v", tc.uri, size, d, tc.accepted)
		}
		if !tc.accepted && !strings.Contains(d.Reason, "size limit") {
			t.Errorf("%s: reason %q does not speak of the size limit", tc.uri, d.Reason)
		}
	}
	// The limit of an overriding record counts too.
	if d := planOne(t, f, "mailto:agg@override.example!1"); !d.Accepted {
		t.Errorf("override with its own !1m limit: %+v", d)
	}
	if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com!"+strconv.Itoa(size-1))); err != nil {
		t.Fatal(err)
	}
	if n := len(f.relay.messages()); n != 0 {
		t.Errorf("%d messages sent past a size limit", n)
	}
	f.sender.cfg.IgnoreSizeLimits = true
	if d := planOne(t, f, "mailto:dmarc@example.com!1"); !d.Accepted {
		t.Errorf("ignore_size_limits: %+v", d)
	}
}

func TestMaxDestinationsAndDuplicates(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.MaxDestinations = 2 })
	ds, err := f.sender.Plan(context.Background(), testReport("mailto:a@example.com", "mailto:A@Example.COM", "mailto:b@example.com", "mailto:c@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	var accepted []string
	for _, d := range ds {
		if d.Accepted {
			accepted = append(accepted, d.Address)
		}
	}
	if len(ds) != 4 || strings.Join(accepted, ",") != "a@example.com" || !strings.Contains(ds[1].Reason, "duplicate") || !strings.Contains(ds[3].Reason, "max_destinations") {
		t.Errorf("Plan: %+v", ds)
	}
}
