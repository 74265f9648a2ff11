package server

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"testing"
)

// TestOperatorTokenRecipe: the shell recipe the refusal of a malformed
// operator credential suggests (bpko_ and 32 random bytes in lower-case
// unpadded base32) makes a credential the server accepts.
func TestOperatorTokenRecipe(t *testing.T) {
	c := DefaultConfig()
	c.OperatorToken = "bpko_short"
	_, err := c.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "bpko_$(head -c 32 /dev/urandom | base32 | tr -d = | tr A-Z a-z)") {
		t.Fatalf("a malformed credential: %v, want the refusal with the recipe", err)
	}
	b := make([]byte, 32)
	rand.Read(b)
	c.OperatorToken = "bpko_" + strings.ToLower(strings.TrimRight(base32.StdEncoding.EncodeToString(b), "="))
	if _, err := c.withDefaults(); err != nil {
		t.Fatalf("the recipe's credential %s is refused: %v", c.OperatorToken, err)
	}
}
