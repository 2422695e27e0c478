package rules

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

const goodRules = `
rules:
  - name: block
    when: helo == "bad.example"
    action: reject
`

const otherRules = `
rules:
  - name: block
    when: helo == "worse.example"
    action: reject
`

const brokenRules = `
rules:
  - name: block
    when: helo === "bad.example"
    action: reject
`

// save writes a file the way editors do: a new file renamed over the old.
func save(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func heloVerdict(s *Set, helo string) policy.Action {
	f := &policy.Facts{Helo: helo}
	return s.Eval(context.Background(), policy.StageHelo, f, nil).Action
}

func TestHolderReload(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": goodRules})
	h := NewHolder(Config{Files: []string{"*.yaml"}}, Options{BaseDir: dir})
	if h.Current() != nil {
		t.Fatal("a set before Load")
	}
	if err := h.Load(Config{Files: []string{"*.yaml"}}); err != nil {
		t.Fatal(err)
	}
	first := h.Current()
	if heloVerdict(first, "bad.example") != policy.Reject {
		t.Fatal("rule not in force")
	}
	first.Eval(context.Background(), policy.StageHelo, &policy.Facts{Helo: "bad.example"}, nil)

	save(t, filepath.Join(dir, "r.yaml"), brokenRules)
	err := h.Reload()
	if err == nil || !strings.Contains(err.Error(), "r.yaml:4:") {
		t.Fatalf("broken save: %v", err)
	}
	if h.Current() != first || h.Failures() != 1 {
		t.Fatalf("broken save replaced the set (failures %d)", h.Failures())
	}

	save(t, filepath.Join(dir, "r.yaml"), otherRules)
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	second := h.Current()
	if second == first || heloVerdict(second, "worse.example") != policy.Reject || heloVerdict(second, "bad.example") != policy.Continue {
		t.Fatal("fixed save not in force")
	}
	// A transaction that started on the first set goes on with it.
	if heloVerdict(first, "bad.example") != policy.Reject {
		t.Error("in-flight set changed under its user")
	}
	// Two matches on the first set, one on the second.
	if got := second.Rules()[0].Matches; got != 3 {
		t.Errorf("counters not carried across the reload: %d", got)
	}

	// Load with a new config: a failing one keeps the old config too.
	if err := h.Load(Config{Files: []string{"nothing.yaml"}}); err == nil {
		t.Fatal("missing file loaded")
	}
	if err := h.Reload(); err != nil || h.Current() == second {
		t.Errorf("reload after a failed Load must use the old config: %v", err)
	}
}

func TestHolderConcurrentUse(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": goodRules})
	h := NewHolder(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir})
	if err := h.Load(Config{Files: []string{"r.yaml"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s := h.Current()
				a := heloVerdict(s, "bad.example")
				b := heloVerdict(s, "worse.example")
				if a == b {
					t.Error("a set changed while in use")
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		content := goodRules
		if i%2 == 0 {
			content = otherRules
		}
		save(t, filepath.Join(dir, "r.yaml"), content)
		if err := h.Reload(); err != nil {
			t.Error(err)
		}
	}
	cancel()
	wg.Wait()
}

func TestWatch(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"rules/r.yaml": goodRules, "lists/hosts.txt": "x.example\n"})
	cfg := Config{Files: []string{"rules/*.yaml"}, Lists: map[string]ListConfig{"hosts": {File: "lists/hosts.txt", Type: "domain"}}}
	h := NewHolder(cfg, Options{BaseDir: dir})
	if err := h.Load(cfg); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 10)
	added := make(chan string, 10)
	h.watching = func(d string) { added <- d }
	watched := map[string]bool{}
	// waitWatched waits for the watch on d: fsnotify sees no change made
	// before it is in place.
	waitWatched := func(d string) {
		t.Helper()
		d, _ = filepath.Abs(d)
		for !watched[d] {
			select {
			case a := <-added:
				watched[a] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("%s not watched after 10s", d)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Watch(ctx, h, func(err error) { results <- err }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	next := func() error {
		t.Helper()
		select {
		case err := <-results:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("no reload after a change")
		}
		return nil
	}
	waitWatched(filepath.Join(dir, "rules"))
	waitWatched(filepath.Join(dir, "lists"))

	first := h.Current()
	save(t, filepath.Join(dir, "rules/r.yaml"), brokenRules)
	if err := next(); err == nil || !strings.Contains(err.Error(), "r.yaml:4:") {
		t.Fatalf("broken save: %v", err)
	}
	if h.Current() != first {
		t.Fatal("broken save replaced the set")
	}

	save(t, filepath.Join(dir, "rules/r.yaml"), otherRules)
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if heloVerdict(h.Current(), "worse.example") != policy.Reject {
		t.Fatal("fixed save not in force")
	}

	// A new file matching the glob, using the list.
	save(t, filepath.Join(dir, "rules/more.yaml"), "rules:\n  - {name: hosts, when: 'in_list(\"hosts\", helo)', action: tempfail}\n")
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if heloVerdict(h.Current(), "y.example") != policy.Continue || heloVerdict(h.Current(), "x.example") != policy.Tempfail {
		t.Fatal("new rule file not picked up")
	}
	// A list change reloads too.
	save(t, filepath.Join(dir, "lists/hosts.txt"), "y.example\n")
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if heloVerdict(h.Current(), "y.example") != policy.Tempfail {
		t.Fatal("list change not picked up")
	}
	// A Load with a new config watches its files from then on.
	os.MkdirAll(filepath.Join(dir, "other"), 0o755)
	save(t, filepath.Join(dir, "other/o.yaml"), goodRules)
	if err := h.Load(Config{Files: []string{"other/*.yaml"}}); err != nil {
		t.Fatal(err)
	}
	waitWatched(filepath.Join(dir, "other"))
	save(t, filepath.Join(dir, "other/o.yaml"), otherRules)
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if heloVerdict(h.Current(), "worse.example") != policy.Reject {
		t.Fatal("change under the new config not picked up")
	}
	// Files that do not matter do not reload.
	os.WriteFile(filepath.Join(dir, "rules/notes.txt"), []byte("x"), 0o644)
	select {
	case err := <-results:
		t.Fatalf("reload for an unrelated file: %v", err)
	case <-time.After(3 * watchDebounce):
	}
}
