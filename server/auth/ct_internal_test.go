package auth

import (
	"context"
	"net/http"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// Every credential check goes through the constant-time comparison, for
// good, tampered and unknown credentials alike.
func TestEveryCheckIsConstantTime(t *testing.T) {
	p, err := control.Open(control.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if _, err := p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	token, id, hash, _ := NewKey()
	if _, err := p.IssueKey(ctx, control.Key{ID: id, Tenant: "acme", Roles: []control.Role{control.RoleReader}, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	op, ophash, _ := NewOperatorToken()
	a, _ := New(Config{Plane: p, OperatorHash: ophash})

	calls, results := 0, []bool{}
	orig := ctEqual
	defer func() { ctEqual = orig }()
	ctEqual = func(x, y []byte) bool {
		calls++
		r := orig(x, y)
		results = append(results, r)
		return r
	}
	tampered := token[:len(token)-1] + "a"
	if tampered == token {
		tampered = token[:len(token)-1] + "b"
	}
	unknown := "bpk_aaaaaaaaaaaa_" + token[17:]
	for _, c := range []struct {
		token string
		ok    bool
	}{{token, true}, {tampered, false}, {unknown, false}, {op, true}, {op[:len(op)-1] + "2", false}} {
		calls, results = 0, nil
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+c.token)
		_, err := a.Authenticate(r)
		if calls != 1 || results[0] != c.ok || (err == nil) != c.ok {
			t.Errorf("%s: %d constant-time comparisons (%v), err %v", c.token[:8], calls, results, err)
		}
	}
}
