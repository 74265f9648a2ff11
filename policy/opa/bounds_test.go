package opa_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy/opa"
)

// A built-in call that would produce far more than its operands hold —
// enough to make the process die for want of memory before the timeout
// is checked again — fails instead, and the gate denies with POLICY_ERROR
// naming the bound; the process goes on.
func TestAmplifyingBuiltinsAreBounded(t *testing.T) {
	// Each builds its operands within a few milliseconds; unbounded, each
	// call asks for tens of gigabytes or more (bits.lsh: 128 GiB).
	long := `s := concat("", ["a" | some i in numbers.range(1, 200000)])` + "\n\t"
	for name, body := range map[string]string{
		"concat":           long + `count(concat(s, [x | some i in numbers.range(1, 200000); x := "a"])) > 0`,
		"bits.lsh":         `bits.lsh(1, 1099511627776) > 0`,
		"bits.lsh huge":    `bits.lsh(1, 10000000000000000000000) > 0`,
		"sprintf":          `f := concat("", ["%[1]999999d" | some i in numbers.range(1, 100000)])` + "\n\t" + `count(sprintf(f, [1])) > 0`,
		"sprintf argument": long + `f := concat("", ["%[1]v" | some i in numbers.range(1, 100000)])` + "\n\t" + `count(sprintf(f, [s])) > 0`,
		"json.marshal_with_options": `v := json.unmarshal(concat("", [concat("", ["[" | some i in numbers.range(1, 5000)]), concat("", ["]" | some i in numbers.range(1, 5000)])]))` + "\n\t" +
			`ind := concat("", [" " | some i in numbers.range(1, 100000)])` + "\n\t" +
			`count(json.marshal_with_options(v, {"indent": ind})) > 0`,
		"net.cidr_contains_matches": `cidrs := [sprintf("10.%d.%d.0/24", [i % 256, i / 256]) | some i in numbers.range(0, 9999)]` + "\n\t" +
			`count(net.cidr_contains_matches(cidrs, cidrs)) > 0`,
	} {
		t.Run(name, func(t *testing.T) {
			g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\ndeny contains \"x\" if {\n\t" + body + "\n}\n"},
				opa.Options{Timeout: 5 * time.Second, Sandboxed: true})
			// Only the bound's check names "bounded here": a call that ran
			// would end the process or the 5s timeout would answer.
			d, err := g.Decide(context.Background(), baseLimitInput())
			if err == nil || d.Allowed || !strings.Contains(err.Error(), "bounded here") && !strings.Contains(err.Error(), "may compare here") {
				t.Fatalf("decision %+v, %v; want a POLICY_ERROR naming the bound", d, err)
			}
		})
	}
}

// Under the bounds, the bounded built-ins answer as OPA's own.
func TestBoundedBuiltinsAnswerAsBefore(t *testing.T) {
	checks := []string{
		`concat(", ", ["a", "b", "c"]) == "a, b, c"`,
		`concat("-", {"x"}) == "x"`,
		`concat("", []) == ""`,
		`sprintf("%05d|%-4s|%v|%.2f|%x", [42, "ab", [1, "z"], 3.14159, "hi"]) == "00042|ab  |[1, \"z\"]|3.14|6869"`,
		`sprintf("%[1]s%[1]s", ["ab"]) == "abab"`,
		`bits.lsh(1, 10) == 1024`,
		`bits.lsh(12345678901234567890, 3) == 98765431209876543120`,
		`json.marshal_with_options({"a": [1, {"b": true}]}, {"indent": "  ", "prefix": "> "}) == "> {\n>   \"a\": [\n>     1,\n>     {\n>       \"b\": true\n>     }\n>   ]\n> }"`,
		`json.marshal_with_options([1], {"pretty": false}) == "[1]"`,
		`net.cidr_contains_matches(["10.0.0.0/8", "192.168.0.0/16"], ["10.1.2.3", "192.168.1.1", "8.8.8.8"]) == {[0, 0], [1, 1]}`,
	}
	for _, c := range checks {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\ndeny contains \"mismatch\" if not " + c + "\n"}, opa.Options{Sandboxed: true})
		if d, err := g.Decide(context.Background(), baseLimitInput()); err != nil || !d.Allowed {
			t.Errorf("%s: %+v, %v", c, d, err)
		}
	}
}

// A sandboxed bundle cannot call the built-ins whose one call has no bound
// that can be checked first; the operator's own policy can.
func TestSandboxRefusesUnboundedBuiltins(t *testing.T) {
	for _, name := range opa.SandboxUnboundedBuiltins {
		call := map[string]string{
			"strings.render_template": `strings.render_template("{{range $.a}}{{range $.a}}x{{end}}{{end}}", {"a": [1, 2]}) == "xxxx"`,
			"graph.reachable_paths":   `graph.reachable_paths({"a": ["b"], "b": []}, {"a"}) == {["a", "b"]}`,
		}[name]
		if call == "" {
			t.Fatalf("no call of %s to try", name)
		}
		dir := writeBundle(t, map[string]string{"p.rego": "package batpak.write\n\ndeny contains \"x\" if not " + call + "\n"})
		if _, err := opa.Load(context.Background(), dir, opa.Options{Sandboxed: true}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("sandboxed %s: %v, want a compile error naming it", name, err)
		}
		g, err := opa.Load(context.Background(), dir, opa.Options{})
		if err != nil {
			t.Fatalf("unsandboxed %s: %v", name, err)
		}
		if d, err := g.Decide(context.Background(), baseLimitInput()); err != nil || !d.Allowed {
			t.Errorf("unsandboxed %s: %+v, %v", name, d, err)
		}
	}
}

// More one-call blow-ups, and what a decision keeps of its reasons: each
// is refused (or cut) at once, where unbounded it ran for seconds to
// minutes or took gigabytes.
func TestMoreBuiltinsAreBounded(t *testing.T) {
	double := `s0 := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"` + "\n\t"
	for i := 1; i <= 15; i++ { // s15: 2 MiB
		double += fmt.Sprintf("s%d := concat(\"\", [s%d, s%d])\n\t", i, i-1, i-1)
	}
	for name, c := range map[string]struct{ body, want string }{
		// 16 GiB as JSON: 2^13 copies of a 2 MiB string.
		"json.marshal": {double + `x1 := [s15, s15]` + "\n\t" + nest("x", 2, 13) + `count(json.marshal(x13)) > 0`, "bounded here"},
		// 8 MB of bits: 20 s to print.
		"bits.lsh": {`bits.lsh(1, 64000000) > 0`, "over 65536 bits"},
		// Exponent forms are integers to OPA: 10^12 bits, 125 GB.
		"bits.lsh 1e12":  {`bits.lsh(1, 1e12) > 0`, "over 65536 bits"},
		"bits.lsh 1e900": {`bits.lsh(json.unmarshal("1e900"), 70000) > 0`, "over 65536 bits"},
		// An exponent is as many digits (1e30000: 30,000).
		"json.unmarshal 1e30000": {`json.unmarshal("1e30000") > 0`, "digits, over the 1000"},
		// A unit after the exponent hides nothing: units.parse makes the
		// exact million-digit value (3 s of CPU, past any timeout).
		"units.parse 1e999999K":        {`units.parse("1e999999K") > 1`, "digits, over the 1000"},
		"units.parse_bytes 1e999999kb": {`units.parse_bytes("1e999999kb") > 1`, "digits, over the 1000"},
		// 20,000 leaves 2,000 deep: 160 MB of indentation as YAML.
		"yaml.marshal": {`v := json.unmarshal(concat("", [concat("", ["[" | some i in numbers.range(1, 2000)]), concat(",", ["1" | some i in numbers.range(1, 20000)]), concat("", ["]" | some i in numbers.range(1, 2000)])]))` + "\n\t" +
			`count(yaml.marshal(v)) > 0`, "bounded here"},
		// %f of 1e308 prints 300 digits: 250,000 times, 79 MB.
		"sprintf %f": {`f := concat("", ["%[1]f" | some i in numbers.range(1, 250000)])` + "\n\t" + `count(sprintf(f, [1e308])) > 0`, "bounded here"},
		// 2M elements: 200 MB.
		"split": {double + `count(split(s15, "")) > 0`, "over 1048576 elements"},
		// A million digits: seconds at every comparison.
		"json.unmarshal": {`json.unmarshal(concat("", ["[", concat("", ["1" | some i in numbers.range(1, 2000)]), "]"]))[0] > 0`, "digits, over the 1000"},
		"to_number":      {`to_number(concat("", ["1" | some i in numbers.range(1, 2000)])) > 0`, "digits, over the 1000"},
	} {
		t.Run(name, func(t *testing.T) {
			g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\ndeny contains \"x\" if {\n\t" + c.body + "\n}\n"},
				opa.Options{Timeout: 5 * time.Second, Sandboxed: true})
			d, err := g.Decide(context.Background(), baseLimitInput())
			if err == nil || d.Allowed || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("decision %+v, %v; want a POLICY_ERROR with %q", d, err, c.want)
			}
		})
	}
}

// nest defines name2 … name<to> as [name<i-1>, name<i-1>] (name1 given).
func nest(name string, from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "%s%d := [%s%d, %s%d]\n\t", name, i, name, i-1, name, i-1)
	}
	return b.String()
}

// A writer's payload number of a million digits is not parsed, at every
// comparison, by the policy reading it: the write is refused at once.
func TestLongPayloadNumberRefused(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": limitPolicy}, opa.Options{Timeout: 5 * time.Second})
	in := baseLimitInput()
	in.Event.Payload = json.RawMessage(`{"amount": ` + strings.Repeat("7", 1_000_000) + `, "note": "gift"}`)
	d, err := g.Decide(context.Background(), in)
	if err == nil || d.Allowed || !strings.Contains(err.Error(), "1000000 digits") {
		t.Fatalf("decision %+v, %v; want a POLICY_ERROR naming the number", d, err)
	}
	in.Event.Payload = json.RawMessage(`{"amount": ` + strings.Repeat("7", 1000) + `, "note": "gift"}`)
	if d, err := g.Decide(context.Background(), in); err != nil || d.Allowed {
		t.Fatalf("a number of 1000 digits: %+v, %v; want the policy's own refusal (over the limit amount)", d, err)
	}
	// An exponent is digits to OPA: 1e1000000 is an integer of a million
	// digits to floor() or a comparison with an integer (seconds of CPU
	// that the evaluation's timeout cannot interrupt; past 1.1 million, a
	// panic), whichever its sign.
	for _, n := range []string{"1e1000000", "7.5E+1000000", "1e-1000000", "1e1001"} {
		in.Event.Payload = json.RawMessage(`{"amount": ` + n + `, "note": "gift"}`)
		start := time.Now()
		d, err := g.Decide(context.Background(), in)
		if err == nil || d.Allowed || !strings.Contains(err.Error(), "digits, over the 1000") {
			t.Fatalf("a payload number %s: %+v, %v; want a POLICY_ERROR naming its size", n, d, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("refusing %s took %v", n, took)
		}
	}
	for _, n := range []string{"1e1000", "1.5e308", "-2.5E-300", "10e5"} {
		in.Event.Payload = json.RawMessage(`{"amount": ` + n + `, "note": "gift"}`)
		want := n == "-2.5E-300" // the one at most 100
		if d, err := g.Decide(context.Background(), in); err != nil || d.Allowed != want {
			t.Fatalf("a payload number %s within the bound: %+v, %v; want the policy's own decision", n, d, err)
		}
	}
}

// NumberDigits counts a number's exponent as the digits it stands for,
// not letters or digits outside numbers.
func TestNumberDigits(t *testing.T) {
	for s, want := range map[string]int{
		`1e1000000`:           1000000,
		`[1.25E+12, 7]`:       12,
		`12345e3`:             6, // the run goes on through the exponent
		`{"e1000000": 3}`:     1,
		`version e1000000`:    7,       // not a number's exponent (not JSON)
		`"1e1000000"`:         1000000, // outside JSON, quotes are not strings
		`{"a": "1e1000000x"}`: 0,
		`-0.5e-7`:             7,
		// Text that is not a number: its exponent does not count.
		`123e4567-e89b-12d3-a456-426614174000`: 15,
		`sha256:9f2e5031aa`:                    5,
		`id: 1e1000000x`:                       8,
		`1e99999999999999999999`:               1 << 30,
	} {
		json := strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[")
		if got := opa.NumberDigits(s, json); got != want {
			t.Errorf("NumberDigits(%s, %v) = %d, want %d", s, json, got, want)
		}
	}
}

// A reason's context that is a gigabyte as JSON (a value built by doubling
// shares its parts) is replaced by a note; a thousand reasons keep the
// first hundred and say how many more.
func TestReasonsAreBounded(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\n" +
		"s := concat(\"\", [\"x\" | some i in numbers.range(1, 4096)])\nx0 := [s]\n" + strings.ReplaceAll(nest("x", 1, 18), "\t", "") +
		"deny contains {\"code\": \"BIG\", \"message\": \"m\", \"context\": {\"a\": x18}}\n" +
		"deny contains sprintf(\"reason %04d\", [i]) if some i in numbers.range(1, 999)\n"},
		opa.Options{Timeout: 5 * time.Second})
	start := time.Now()
	d, err := g.Decide(context.Background(), baseLimitInput())
	if err != nil || d.Allowed {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if len(d.Reasons) != opa.MaxReasons+1 || d.Reasons[opa.MaxReasons].Code != "MORE_REASONS" || !strings.Contains(d.Reasons[opa.MaxReasons].Message, "900 more") {
		t.Fatalf("%d reasons, the last %+v; want %d and a note of 900 more", len(d.Reasons), d.Reasons[len(d.Reasons)-1], opa.MaxReasons)
	}
	big := d.Reasons[0]
	if big.Code != "BIG" || big.Context["omitted"] == nil || len(big.Context) != 1 {
		t.Fatalf("the big reason: %+v, want its context omitted", big.Code)
	}
	if _, err := json.Marshal(d.Reasons); err != nil {
		t.Fatal(err)
	}
	// Unbounded, marshalling the context took 25 s and 3.7 GB here.
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("deciding and marshalling took %v", took)
	}
}

// A decision's reasons together are bounded (decisions are cached): 20
// reasons of 60 KiB each keep the first few and count the rest.
func TestDecisionReasonsBoundedTogether(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\n" +
		"pad := concat(\"\", [\"x\" | some i in numbers.range(1, 61440)])\n" +
		"deny contains sprintf(\"%02d %s\", [i, pad]) if some i in numbers.range(1, 20)\n"}, opa.Options{Timeout: 5 * time.Second})
	d, err := g.Decide(context.Background(), baseLimitInput())
	if err != nil || d.Allowed {
		t.Fatalf("decision %+v, %v", d, err)
	}
	total := 0
	for _, r := range d.Reasons {
		total += len(r.Code) + len(r.Message)
	}
	last := d.Reasons[len(d.Reasons)-1]
	if total > opa.MaxDecisionReasonBytes+1024 || last.Code != "MORE_REASONS" || len(d.Reasons) < 2 {
		t.Fatalf("%d reasons of %d bytes in all, the last %q; want at most %d bytes and a count of the rest", len(d.Reasons), total, last.Code, opa.MaxDecisionReasonBytes)
	}
}
