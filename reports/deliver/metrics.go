package deliver

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the delivery counters, one per report message.
type metrics struct {
	sent, failed, refused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailward_dmarc_reports_sent_total", Help: "DMARC aggregate report messages the relay accepted, one per destination.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailward_dmarc_reports_failed_total", Help: "DMARC aggregate report messages not delivered: refused by the relay (5xx), or still failing when retries ran out.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailward_dmarc_report_destinations_refused_total", Help: "rua destinations given no report: unconfirmed external destinations, size limits, malformed or unsupported URIs.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []*prometheus.Counter{&m.sent, &m.failed, &m.refused} {
		if err := reg.Register(*c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("registering report delivery metrics: %w", err)
			}
			// A Sender made again (a reload) counts on in the same series.
			existing, ok := are.ExistingCollector.(prometheus.Counter)
			if !ok {
				return nil, fmt.Errorf("registering report delivery metrics: %w", err)
			}
			*c = existing
		}
	}
	return m, nil
}
