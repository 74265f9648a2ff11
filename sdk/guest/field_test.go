package guest_test

import (
	"fmt"
	"testing"

	"github.com/batpak-go/batpak/sdk/guest"
)

func TestFieldReadsAsThePolicyDoes(t *testing.T) {
	for _, tc := range []struct {
		payload, name, want string
		ok                  bool
	}{
		{`{"total_cents":998,"items":[]}`, "total_cents", "998", true},
		{`{"total\u005fcents": 998}`, "total_cents", "998", true},
		{`{"Total_Cents":998}`, "total_cents", "", false},
		{`{"a":{"total_cents":1}}`, "total_cents", "", false},
		{`{"note":"x","total_cents":-5}`, "total_cents", "-5", true},
		{`[1,2]`, "total_cents", "", false},
	} {
		raw, ok := guest.Field([]byte(tc.payload), tc.name)
		if ok != tc.ok || string(raw) != tc.want {
			t.Errorf("Field(%s, %q) = %q, %v; want %q, %v", tc.payload, tc.name, raw, ok, tc.want, tc.ok)
		}
	}
}

// Reading one field of each event's payload in a fold, as the write
// policy reads it.
func ExampleField() {
	payload := []byte(`{"currency":"EUR","total_cents":998}`)
	if raw, ok := guest.Field(payload, "total_cents"); ok {
		fmt.Println(string(raw))
	}
	// Output: 998
}
