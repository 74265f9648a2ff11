package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/wire"
)

// requestBodies are append and batch bodies of the usual shape and of
// every unusual one the one-pass reader hands to Decode.
var requestBodies = []string{
	`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"a":1}}`,
	` { "entity" : "order:1" , "scope":"shop","kind":4097,"payload":[1,2,{"b":null}],"expected_clock":0 } `,
	"{\n\t\"entity\":\"e\",\"scope\":\"s\",\"kind\":\"0xF:0x2a\",\"payload\":\"x\",\"expected_clock\":\"no_events\",\"idempotency_key\":\"k\"}\r\n",
	`{"entity":"é€😀","scope":"s","kind":"1:1","payload":{"ü":"ß"},"flags":65535,"correlation_id":"0190a2b4-0000-7000-8000-000000000001","causation_id":"x"}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"flags":65536}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"flags":-1}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"flags":1.0}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"flags":01}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"flags":null}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"cause_item":-0}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"cause_item":-3}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"cause_item":99999999999999999999}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"cause_item":2e1}`,
	`{"entity":"e","scope":"s","kind":1e3,"payload":-1.5e-3,"expected_clock":-1}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":null,"expected_clock":null}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"expected_clock":007}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,"expected_clock":18446744073709551616}`,
	`{"entity":null,"scope":"s","kind":"1:1","payload":1,"correlation_id":null}`,
	`{"entity":"a\"b","scope":"s\u0041","kind":"1\u003a1","payload":"\ud800"}`,
	`{"Entity":"e","SCOPE":"s","kind":"1:1","payload":1}`,
	`{"entity":"e","entity":"f","kind":"1:1","payload":1}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":{"a":1,"a":2}}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":{"a":1,"\u0061":2}}`,
	`{"entity":"e","colour":1}`,
	`{"entity":5}`,
	`{"entity":"a` + "\xff" + `"}`,
	`{"entity":"a","payload":"` + "\xff" + `"}`,
	`{"entity":"a` + "\x01" + `"}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":{"a":[1,2,}}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":tru}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1,}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1} {}`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":1}x`,
	`{"entity":"e","scope":"s","kind":"1:1","payload":"unterminated}`,
	`{"entity":"e","payload":[[[[[[[]]]]]]]}`,
	`{"entity":"e","payload":[[[[[[[[]]]]]]]]}`,
	`{"entity":"e","payload":"[[[[[[[[[[[[[[[[[["}`,
	`{}`, `[]`, `null`, `""`, ``, ` `, `{`, `}`, `{"events":`,
	`{"events":[]}`,
	`{"events":null}`,
	`{"events":{}}`,
	`{"events":[],"events":[]}`,
	`{"events":[{"entity":"e","scope":"s","kind":"1:1","payload":1},{"entity":"e","scope":"s","kind":"1:1","payload":2,"cause_item":0}]}`,
	`{"events":[{"entity":"e","scope":"s","kind":"1:1","payload":[[[[]]]]}]}`,
	`{"events":[{"entity":"e","scope":"s","kind":"1:1","payload":[[[[[]]]]]}]}`,
	`{"events":[{"entity":"e"},]}`,
	`{"events":[{"entity":"e"}],"x":1}`,
	`{"events":[{"entity":"e"}]`,
	`{"events":[1]}`,
	`{"Events":[{"entity":"e"}]}`,
}

// decodeBoth reads body with the one-pass reader and with Decode, into
// the request type the body's shape suggests.
func decodeBoth(body []byte, depth int, batch bool) (fast, slow any, fastErr, slowErr error) {
	if batch {
		var f, s wire.BatchRequest
		fastErr, slowErr = wire.DecodeBatch(body, &f, depth, 0), wire.Decode(body, &s, depth)
		return f, s, fastErr, slowErr
	}
	var f, s wire.AppendRequest
	fastErr, slowErr = wire.DecodeAppend(body, &f, depth), wire.Decode(body, &s, depth)
	return f, s, fastErr, slowErr
}

// sameAsDecode fails t unless DecodeAppend and DecodeBatch answer body
// exactly as Decode does: the same request, or the same error.
func sameAsDecode(t *testing.T, body []byte, depth int) {
	t.Helper()
	for _, batch := range []bool{false, true} {
		fast, slow, fastErr, slowErr := decodeBoth(body, depth, batch)
		if fmt.Sprint(fastErr) != fmt.Sprint(slowErr) || fmt.Sprintf("%#v", fastErr) != fmt.Sprintf("%#v", slowErr) {
			t.Fatalf("batch=%v depth %d %q: error %v, Decode's %v", batch, depth, body, fastErr, slowErr)
		}
		if slowErr == nil && !sameRequest(fast, slow) {
			t.Fatalf("batch=%v depth %d %q:\n got %#v\nwant %#v", batch, depth, body, fast, slow)
		}
		// The bound counts the events Decode reads: exactly that many
		// pass it, one fewer is refused.
		if sb, ok := slow.(wire.BatchRequest); ok && slowErr == nil && len(sb.Events) > 0 {
			n := len(sb.Events)
			var r wire.BatchRequest
			if err := wire.DecodeBatch(body, &r, depth, n); err != nil {
				t.Fatalf("depth %d %q: %d events under a bound of %d: %v", depth, body, n, n, err)
			}
			var tm *wire.TooManyItemsError
			if err := wire.DecodeBatch(body, &r, depth, n-1); n > 1 && !errors.As(err, &tm) {
				t.Fatalf("depth %d %q: %d events under a bound of %d: %v", depth, body, n, n-1, err)
			}
		}
	}
}

// sameRequest compares two decoded requests member by member, as
// reflect.DeepEqual would, leaving out unexported members: the one-pass
// reader's record of its payload checks, which Decode does not make.
func sameRequest(a, b any) bool { return sameExported(reflect.ValueOf(a), reflect.ValueOf(b)) }

func sameExported(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if a.Type().Field(i).IsExported() && !sameExported(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Type().Elem().Kind() != reflect.Struct {
			return reflect.DeepEqual(a.Interface(), b.Interface())
		}
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !sameExported(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func TestDecodeRequestAgreesWithDecode(t *testing.T) {
	for _, b := range requestBodies {
		for _, depth := range []int{1, 2, 3, 4, 5, 6, 7, 8, 64} {
			sameAsDecode(t, []byte(b), depth)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, b := range requestBodies {
		f.Add([]byte(b), uint8(8))
	}
	f.Fuzz(func(t *testing.T, body []byte, depth uint8) {
		sameAsDecode(t, body, int(depth%16)+1)
	})
}

// The one-pass reader leaves payloads in the body: nothing is copied.
func TestDecodeAppendSharesPayload(t *testing.T) {
	body := []byte(`{"entity":"order:1","scope":"shop","kind":"1:1","payload":{"a":[1,2,3]}}`)
	var req wire.AppendRequest
	if err := wire.DecodeAppend(body, &req, 8); err != nil {
		t.Fatal(err)
	}
	if string(req.Payload) != `{"a":[1,2,3]}` || !within(req.Payload, body) {
		t.Fatalf("payload %q not read in place", req.Payload)
	}
	batch := batchBody(3)
	var br wire.BatchRequest
	if err := wire.DecodeBatch(batch, &br, 8, 0); err != nil {
		t.Fatal(err)
	}
	if len(br.Events) != 3 || !within(br.Events[2].Payload, batch) {
		t.Fatalf("batch payloads not read in place: %d events", len(br.Events))
	}
	// What the reader checked, the store does not check again: the items
	// carry the record of each payload's check, with the payload's depth.
	for i, req := range []*wire.AppendRequest{&req, &br.Events[2]} {
		it, err := req.Item(-1, "")
		if err != nil {
			t.Fatal(err)
		}
		depth := []int{2, 3}[i]
		if !it.Options.PayloadChecked.Covers(it.Payload, depth) || it.Options.PayloadChecked.Covers(it.Payload, depth-1) {
			t.Fatalf("request %d: the item does not carry its payload's check at depth %d: %s", i, depth, it.Payload)
		}
	}
}

func within(sub, b []byte) bool {
	p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(sub))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p < lo+uintptr(len(b))
}

// batchBody is a batch of n order events of about 230 bytes each.
func batchBody(n int) []byte {
	b := []byte(`{"events":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"entity":"acme:order:%d","scope":"shop","kind":"1:1","payload":{"order":"acme:order:%d","customer":"cust-%d","items":[{"sku":"BAT-AA-4","qty":%d,"price_cents":%d}],"total_cents":%d,"currency":"EUR","note":"leave at the door"}}`,
			i, i, i%100, 1+i%7, 100+i%997, 1999+i)
	}
	return append(b, "]}"...)
}

// BenchmarkDecodeRequest compares the one-pass reader with Decode on a
// single append and on a batch of 100 (compare with benchstat -col /decoder).
//
//	go test -run '^$' -bench DecodeRequest -count 8 ./server/wire/ > d.txt
//	benchstat -col /decoder d.txt
func BenchmarkDecodeRequest(b *testing.B) {
	one := []byte(`{"entity":"acme:order:17","scope":"shop","kind":"1:1","payload":{"order":"acme:order:17","customer":"cust-17","items":[{"sku":"BAT-AA-4","qty":3,"price_cents":117}],"total_cents":2350,"currency":"EUR","note":"leave at the door"},"expected_clock":4}`)
	batch := batchBody(100)
	const depth = 515
	decoders := []struct {
		name   string
		append func([]byte, *wire.AppendRequest, int) error
		batch  func([]byte, *wire.BatchRequest, int) error
	}{
		{"Decode", func(b []byte, r *wire.AppendRequest, d int) error { return wire.Decode(b, r, d) },
			func(b []byte, r *wire.BatchRequest, d int) error { return wire.Decode(b, r, d) }},
		{"one-pass", wire.DecodeAppend, func(b []byte, r *wire.BatchRequest, d int) error { return wire.DecodeBatch(b, r, d, 4096) }},
	}
	for _, dec := range decoders {
		b.Run("body=append/decoder="+dec.name, func(b *testing.B) {
			b.SetBytes(int64(len(one)))
			b.ReportAllocs()
			for b.Loop() {
				var req wire.AppendRequest
				if err := dec.append(one, &req, depth); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, dec := range decoders {
		b.Run("body=batch100/decoder="+dec.name, func(b *testing.B) {
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				var req wire.BatchRequest
				if err := dec.batch(batch, &req, depth); err != nil || len(req.Events) != 100 {
					b.Fatal(err)
				}
			}
		})
	}
}

// AppendReceipt and AppendReceipts write what encoding/json writes.
func TestAppendReceiptsAgreeWithEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200; n++ {
		rs := make([]core.Receipt, n%5)
		for i := range rs {
			for j := range rs[i].ID {
				rs[i].ID[j] = byte(r.Uint32())
				rs[i].CorrelationID[j] = byte(r.Uint32())
			}
			rs[i].GlobalSequence = r.Uint64() >> (r.Uint32() % 64)
			rs[i].Clock = r.Uint64() >> (r.Uint32() % 64)
			rs[i].Timestamp = int64(r.Uint64()) >> (r.Uint32() % 64)
			rs[i].Deduplicated = r.IntN(2) == 0
		}
		out := make([]wire.Receipt, len(rs))
		for i, rc := range rs {
			out[i] = wire.FromReceipt(rc)
			want, _ := json.Marshal(out[i])
			if got := wire.AppendReceipt(nil, rc); string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		}
		want, _ := json.Marshal(map[string]any{"receipts": out})
		if got := wire.AppendReceipts([]byte("x"), rs); string(got) != "x"+string(want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}

// A kind or expected clock reads the same written plainly or with escapes
// and number forms that encoding/json decodes to the same value.
func TestKindAndExpectationForms(t *testing.T) {
	item := func(kind, expect string) (string, error) {
		req := wire.AppendRequest{Entity: "e", Scope: "s", Kind: []byte(kind), Payload: []byte("1"), ExpectedClock: []byte(expect)}
		it, err := req.Item(-1, "")
		return fmt.Sprint(it.Kind, it.Options.ExpectedClock), err
	}
	for _, pair := range [][2][2]string{
		{{`"1:1"`, `7`}, {`"\u0031:1"`, `7`}},
		{{`"0xF:0x2a"`, `"no_events"`}, {`"0xF:0x2\u0061"`, `"no_\u0065vents"`}},
		{{`"4097"`, `0`}, {`4097.0`, `0`}},
	} {
		a, errA := item(pair[0][0], pair[0][1])
		b, errB := item(pair[1][0], pair[1][1])
		if errA != nil || errB != nil || a != b {
			t.Fatalf("%v: %s %v; %v: %s %v", pair[0], a, errA, pair[1], b, errB)
		}
	}
	for _, bad := range [][2]string{{`"0:1"`, `1`}, {`"1:1"`, `01`}, {`"1:1"`, `-1`}, {`"1:1"`, `18446744073709551616`}, {`"1:1"`, `"none"`}} {
		if _, err := item(bad[0], bad[1]); err == nil {
			t.Fatalf("kind %s expected_clock %s accepted", bad[0], bad[1])
		}
	}
}

// A batch of more events than its bound is refused naming the bound,
// whichever reader takes the body, and costs little more than its bytes:
// the events past the bound are not decoded.
func TestDecodeBatchBoundsItems(t *testing.T) {
	usual := func(n int) []byte { return batchBody(n) }
	// An escaped entity sends the body to Decode.
	unusual := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString(`{"events":[`)
		for i := range n {
			if i > 0 {
				b.WriteString(" , ")
			}
			fmt.Fprintf(&b, `{"entity":"e\u0031","scope":"s","kind":"1:1","payload":{"s":"a,]\"[{"}}`)
		}
		b.WriteString(`]}`)
		return b.Bytes()
	}
	for name, body := range map[string]func(int) []byte{"one-pass": usual, "decode": unusual} {
		for _, limit := range []int{1, 2, 100} {
			var req wire.BatchRequest
			if err := wire.DecodeBatch(body(limit), &req, 16, limit); err != nil || len(req.Events) != limit {
				t.Fatalf("%s: %d events under a bound of %d: %v, %d decoded", name, limit, limit, err, len(req.Events))
			}
			err := wire.DecodeBatch(body(limit+1), &req, 16, limit)
			var tm *wire.TooManyItemsError
			if !errors.As(err, &tm) || tm.Limit != limit || !strings.Contains(err.Error(), strconv.Itoa(limit)) {
				t.Fatalf("%s: %d events under a bound of %d: %v", name, limit+1, limit, err)
			}
		}
	}
	// 8 MiB of empty events: refused without decoding them.
	huge := append([]byte(`{"events":[`), bytes.Repeat([]byte(`{},`), 8<<20/3)...)
	huge = append(huge, `{}]}`...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var req wire.BatchRequest
	err := wire.DecodeBatch(huge, &req, 16, 4096)
	runtime.ReadMemStats(&after)
	var tm *wire.TooManyItemsError
	if !errors.As(err, &tm) {
		t.Fatalf("2.8M events under a bound of 4096: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("refusing an 8 MiB batch of 2.8M events allocated %d bytes", alloc)
	}
}

// TestRequestMembersRepeatedButForCase: a request's own member named
// twice but for case, at any depth of the request ("entity" and
// "Entity" in a cursor's region), is refused naming both (encoding/json
// would keep the last, where a proxy in front may read the first); names
// in a payload are the writer's own and may differ only in case.
func TestRequestMembersRepeatedButForCase(t *testing.T) {
	var v struct {
		Region struct {
			Entity string `json:"entity"`
		} `json:"region"`
		Payload json.RawMessage `json:"payload"`
	}
	for body, refused := range map[string]bool{
		`{"region":{"entity":"public:","Entity":"secret:"}}`:                  true,
		`{"region":{"entity":"public:"},"REGION":{"entity":"secret:"}}`:       true,
		`{"region":{"entity":"a"},"payload":{"x":1,"X":2,"Y":{"z":1,"Z":2}}}`: false,
		`{"region":{"entity":"a"},"payload":[{"entity":1,"Entity":2}]}`:       false,
	} {
		err := wire.Decode([]byte(body), &v, 16)
		var we *wire.Error
		if refused != (err != nil) || refused && (!errors.As(err, &we) || we.Code != wire.CodeInvalidJSON || !strings.Contains(err.Error(), "but for case")) {
			t.Errorf("%s: %v, refused %v", body, err, refused)
		}
	}
}
