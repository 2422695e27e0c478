package rules

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"golang.org/x/net/publicsuffix"

	"github.com/mailward/mailward/policy"
)

// builtinFuncs are the functions every rule set has.
var builtinFuncs = []string{"in_list", "in_cidr", "domain_of", "org_domain", "body_matches"}

// funcs implements the built-in functions over one set's lists.
type funcs struct {
	lists map[string]*list
	org   func(ctx context.Context, domain string) string
}

func strArg(args []any, i int) string {
	if i < len(args) {
		s, _ := args[i].(string)
		return s
	}
	return ""
}

func (fs *funcs) inList(args ...any) (any, error) {
	name := strArg(args, 0)
	l := fs.lists[name]
	if l == nil {
		return false, fmt.Errorf("unknown list %q", name)
	}
	return l.contains(strArg(args, 1)), nil
}

func (fs *funcs) inCIDR(args ...any) (any, error) {
	name := strArg(args, 1)
	l := fs.lists[name]
	if l == nil || l.kind != listIP {
		return false, fmt.Errorf("%q is not an ip list", name)
	}
	return l.contains(strArg(args, 0)), nil
}

func domainOf(args ...any) (any, error) {
	a := strArg(args, 0)
	if strings.IndexByte(a, '@') < 0 {
		// A bare domain is its own domain.
		return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(a), ".")), nil
	}
	return policy.DomainOf(a), nil
}

func (fs *funcs) orgDomain(args ...any) (any, error) {
	ctx, _ := args[0].(context.Context)
	if ctx == nil {
		ctx = context.Background()
	}
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(strArg(args, 1)), "."))
	if d == "" {
		return "", nil
	}
	// Noted in the transaction: a replay of the journal answers the same.
	return policy.Lookup(ctx, "org_domain:"+d, func() string {
		if fs.org != nil {
			return fs.org(ctx, d)
		}
		if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
			return o
		}
		return d
	}), nil
}

var funcNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var ctxType = reflect.TypeOf((*context.Context)(nil)).Elem()

// extraFunc checks an extra function and makes it callable with the
// transaction's context passed first.
func (c *compiler) extraFunc(f Func) (expr.Option, error) {
	if !funcNameRE.MatchString(f.Name) {
		return nil, fmt.Errorf("not a valid function name")
	}
	if _, ok := variableID(f.Name); ok || slices.Contains(builtinFuncs, f.Name) {
		return nil, fmt.Errorf("the name is taken by a built-in")
	}
	if _, ok := c.extra[f.Name]; ok {
		return nil, fmt.Errorf("declared twice")
	}
	if f.Fn == nil || len(f.Types) == 0 {
		return nil, fmt.Errorf("needs Fn and at least one signature in Types")
	}
	types := make([]any, len(f.Types))
	for i, t := range f.Types {
		ft := reflect.TypeOf(t)
		if ft != nil && ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft == nil || ft.Kind() != reflect.Func || ft.NumOut() != 1 {
			return nil, fmt.Errorf("signature %d is not a function type with one result", i+1)
		}
		in := []reflect.Type{ctxType}
		for j := 0; j < ft.NumIn(); j++ {
			in = append(in, ft.In(j))
		}
		types[i] = reflect.New(reflect.FuncOf(in, []reflect.Type{ft.Out(0)}, ft.IsVariadic())).Interface()
	}
	fn := f.Fn
	call := func(args ...any) (any, error) {
		ctx, _ := args[0].(context.Context)
		if ctx == nil {
			ctx = context.Background()
		}
		return fn(ctx, args[1:]...)
	}
	return expr.Function(f.Name, call, types...), nil
}
