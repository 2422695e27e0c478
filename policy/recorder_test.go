package policy

import "testing"

type countRecorder struct{ n int }

func (c *countRecorder) Record(*Finished) { c.n++ }

// TestJoinRecorders: each recorder joined gets every transaction; nil
// ones are left out.
func TestJoinRecorders(t *testing.T) {
	if JoinRecorders(nil, nil) != nil {
		t.Error("no recorders, yet a Recorder")
	}
	a, b := &countRecorder{}, &countRecorder{}
	if JoinRecorders(nil, a) != Recorder(a) {
		t.Error("one recorder is not itself")
	}
	r := JoinRecorders(a, nil, b)
	r.Record(&Finished{})
	r.Record(&Finished{})
	if a.n != 2 || b.n != 2 {
		t.Errorf("recorded %d and %d, want 2 each", a.n, b.n)
	}
}
