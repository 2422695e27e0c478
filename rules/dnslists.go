package rules

import (
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/policy"
)

// dnsListVars are the variables filled from DNS list answers, and
// uriListVars from URI list answers: rules name zones in both alike.
const (
	dnsListVars = 1<<vDNSBL | 1<<vDNSBLNames | 1<<vDNSBLErrors
	uriListVars = 1<<vURIBL | 1<<vURIBLErrors
)

// dnsListReads records how an expression reads the DNS list variables,
// so that its stage follows the zones it names: IP lists answer at
// connect, domain lists only once the sender's domain is known (mail).
// The analyzer sees children before their parents, so the reads are
// sorted out after the walk.
type dnsListReads struct {
	idents []*ast.IdentifierNode
	zones  map[*ast.IdentifierNode]string // reads of one named zone
}

func isDNSListVar(n ast.Node) (*ast.IdentifierNode, bool) {
	id, ok := n.(*ast.IdentifierNode)
	if !ok {
		return nil, false
	}
	v, known := variableID(id.Value)
	return id, known && (dnsListVars|uriListVars)&(1<<v) != 0
}

func (d *dnsListReads) ident(n *ast.IdentifierNode) {
	if _, ok := isDNSListVar(n); ok {
		d.idents = append(d.idents, n)
	}
}

func (d *dnsListReads) named(id *ast.IdentifierNode, zone string) {
	if d.zones == nil {
		d.zones = map[*ast.IdentifierNode]string{}
	}
	d.zones[id] = zone
}

// binary sees "zone" in dnsbl.
func (d *dnsListReads) binary(n *ast.BinaryNode) {
	if n.Operator != "in" && n.Operator != "not in" {
		return
	}
	s, ok := n.Left.(*ast.StringNode)
	if id, isVar := isDNSListVar(n.Right); ok && isVar {
		d.named(id, s.Value)
	}
}

// member sees dnsbl["zone"].
func (d *dnsListReads) member(n *ast.MemberNode) {
	s, ok := n.Property.(*ast.StringNode)
	if id, isVar := isDNSListVar(n.Node); ok && isVar {
		d.named(id, s.Value)
	}
}

// stage is the first stage at which every zone read has answered, and why.
func (d *dnsListReads) stage(domainZones map[string]bool) (policy.Stage, string) {
	if len(domainZones) == 0 {
		return policy.StageConnect, ""
	}
	for _, id := range d.idents {
		zone, named := d.zones[id]
		switch {
		case !named:
			return policy.StageMail, id.Value + " (the domain lists answer once the sender is known)"
		case domainZones[normalZone(zone)]:
			return policy.StageMail, id.Value + " zone " + zone + " (a domain list: it answers once the sender is known)"
		}
	}
	return policy.StageConnect, ""
}

func normalZone(z string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(z), "."))
}

func zoneSet(zones []string) map[string]bool {
	if len(zones) == 0 {
		return nil
	}
	out := make(map[string]bool, len(zones))
	for _, z := range zones {
		out[normalZone(z)] = true
	}
	return out
}

// addLists notes the DNS list zones an expression of r reads.
func (r *rule) addLists(a *analyzer) {
	for _, id := range a.lists.idents {
		zone, named := a.lists.zones[id]
		if !named {
			r.listsAny = true
			continue
		}
		if z := normalZone(zone); !slices.Contains(r.lists, z) {
			r.lists = append(r.lists, z)
		}
	}
}

// failedLists says which DNS lists r reads failed in f: every failed one
// when r reads the lists without naming a zone, else those it names.
// A list that failed and that r does not read leaves r sure of itself.
func (r *rule) failedLists(results []dnsbl.Result, what string) string {
	var zones []string
	for _, res := range results {
		if res.Error != "" && (r.listsAny || slices.Contains(r.lists, normalZone(res.Zone))) && !slices.Contains(zones, res.Zone) {
			zones = append(zones, res.Zone)
		}
	}
	if len(zones) == 0 {
		return ""
	}
	return what + " " + strings.Join(zones, ", ") + " failed"
}
