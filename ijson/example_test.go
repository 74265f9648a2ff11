package ijson_test

import (
	"errors"
	"fmt"

	"github.com/batpak-go/batpak/ijson"
)

func ExampleValidate() {
	fmt.Println(ijson.Validate([]byte(`{"total_cents":998,"items":[{"qty":1}]}`), 512))

	// A repeated member name, even spelled with an escape, is refused.
	err := ijson.Validate([]byte(`{"total_cents":1,"total\u005fcents":998}`), 512)
	var e *ijson.Error
	fmt.Println(errors.As(err, &e), e.Rule)

	// So is nesting deeper than the limit.
	err = ijson.Validate([]byte(`[[[1]]]`), 2)
	fmt.Println(errors.As(err, &e), e.Rule)
	// Output:
	// <nil>
	// true duplicate-key
	// true depth
}

func ExampleLookup() {
	raw, ok := ijson.Lookup([]byte(`{"currency":"EUR","total\u005fcents":998}`), "total_cents")
	fmt.Println(string(raw), ok)
	_, ok = ijson.Lookup([]byte(`{"Total_Cents":998}`), "total_cents")
	fmt.Println(ok)
	// Output:
	// 998 true
	// false
}
