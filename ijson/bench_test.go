package ijson_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/ijson"
)

// BenchmarkValidate: Validate on a 100-byte order (the store's benchmark
// payload), a ~600-byte document with longer strings and nesting, and a
// 2 KiB one that is mostly one long string.
//
//	go test ./ijson -run '^$' -bench Validate
func BenchmarkValidate(b *testing.B) {
	docs := map[string][]byte{
		"order100": []byte(`{"order":"order-000123","sku":"SKU-12345","qty":3,"price":19.99,"note":"gift wrap, leave at door!!"}`),
		"nested600": []byte(`{"customer":{"id":"c-8812","name":"Ana María Löwe","email":"ana@example.org","tags":["vip","newsletter","eu"]},` +
			`"lines":[{"sku":"SKU-1","qty":1,"price":12.5,"title":"A paperback about distributed systems"},` +
			`{"sku":"SKU-2","qty":2,"price":3.25,"title":"Stickers, assorted"},{"sku":"SKU-3","qty":1,"price":99.0,"title":"Mechanical keyboard, brown switches"}],` +
			`"shipping":{"street":"Rua das Flores 12","city":"Lisboa","zip":"1200-195","country":"PT","notes":"ring twice; leave with the neighbour if nobody answers"},` +
			`"paid":true,"coupon":null,"total":1.2e2}`),
	}
	docs["text2k"] = []byte(`{"id":"note-1","body":"` + strings.Repeat("Plain prose of a support ticket, quoted at length. ", 40) + `"}`)
	for _, name := range []string{"order100", "nested600", "text2k"} {
		doc := docs[name]
		b.Run(fmt.Sprintf("%s/%dB", name, len(doc)), func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ijson.Validate(doc, 64); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
