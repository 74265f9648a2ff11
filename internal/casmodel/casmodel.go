package casmodel

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// In is an operation's input: a read of Entity's count, or a
// compare-and-set append expecting the count Expect.
type In struct {
	Entity string
	Read   bool
	Expect int // compare-and-set: the count the write expects
}

// Out is an operation's output.
type Out struct {
	Result byte // 'r' read, 'o' written, 'c' conflict, '?' unknown
	Count  int  // read: the count seen; written: the count after; conflict: the actual count
}

// OpenEnded is the return time of an operation whose outcome is unknown:
// porcupine may place it anywhere after its call, or treat it as never
// applied.
const OpenEnded = int64(1) << 62

// Model: a written op needs the count it expected and adds one; a
// conflict sees a different count; an op of unknown outcome may have done
// either. Histories are checked per entity.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			e := op.Input.(In).Entity
			if by[e] == nil {
				order = append(order, e)
			}
			by[e] = append(by[e], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, e := range order {
			out = append(out, by[e])
		}
		return out
	},
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(int), input.(In), output.(Out)
		switch {
		case in.Read:
			return out.Count == s, s
		case out.Result == 'o':
			return s == in.Expect && out.Count == s+1, s + 1
		case out.Result == 'c':
			return s != in.Expect && out.Count == s, s
		case s == in.Expect: // unknown, applied here
			return true, s + 1
		default: // unknown, refused here
			return true, s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(In), output.(Out)
		if in.Read {
			return fmt.Sprintf("read %s -> %d", in.Entity, out.Count)
		}
		return fmt.Sprintf("cas %s expect %d -> %c %d", in.Entity, in.Expect, out.Result, out.Count)
	},
}
