package rules

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
)

// readmeCalls is a call of each function rules/README.md documents, as a
// rule would write it. A function the README adds needs one here.
var readmeCalls = map[string]string{
	"in_cidr":      `in_cidr(ip, "10.0.0.0/8", "2001:db8::/32")`,
	"in_list":      `in_list("partners", mail_from_domain)`,
	"domain_of":    `domain_of(mail_from) == "example.org"`,
	"org_domain":   `org_domain(helo) == "example.org"`,
	"ratelimit":    `ratelimit("ip:" + ip, 100, "1h")`,
	"header":       `header("X-Mailer") == "x"`,
	"body_matches": `body_matches("(?i)unsubscribe")`,
}

// TestReadmeNamesCompile: every variable and function rules/README.md
// lists compiles in a rule, so the documentation cannot name what does
// not exist.
func TestReadmeNamesCompile(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	vars := section(t, text, "### Variables")
	funcs := section(t, text, "### Functions")
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)(\\(\\w*\\))?` \\|")
	bullet := regexp.MustCompile("(?m)^\\* `([a-z_]+)\\(")
	var exprs []string
	names := 0
	for _, m := range row.FindAllStringSubmatch(vars, -1) {
		names++
		if m[2] != "" {
			exprs = append(exprs, call(t, m[1]))
			continue
		}
		exprs = append(exprs, "let v = "+m[1]+"; v == v")
	}
	for _, m := range bullet.FindAllStringSubmatch(funcs, -1) {
		names++
		exprs = append(exprs, call(t, m[1]))
	}
	if names < 30 {
		t.Fatalf("found %d names in the README's tables and lists; has its layout changed?", names)
	}
	var rules strings.Builder
	rules.WriteString("lists:\n  partners: {file: partners.txt, type: domain}\nrules:\n")
	for i, e := range exprs {
		rules.WriteString("  - name: r" + strconv.Itoa(i) + "\n    stage: eom\n    when: '" + strings.ReplaceAll(e, "'", "''") + "'\n    action: score\n    score: 1\n")
	}
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": rules.String(), "partners.txt": "partner.example\n"})
	mem := cache.NewMemory(cache.Config{}, cache.Options{})
	defer mem.Close()
	_, err = Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir, Functions: []Func{RateLimitFunc(mem, nil)}})
	if err != nil {
		t.Fatalf("names the README documents do not compile:\n%v", err)
	}
}

func section(t *testing.T, text, heading string) string {
	_, rest, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	if i := strings.Index(rest, "\n### "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

func call(t *testing.T, fn string) string {
	c, ok := readmeCalls[fn]
	if !ok {
		t.Errorf("the README documents function %s: add a call of it to readmeCalls", fn)
		return "true"
	}
	return c
}
