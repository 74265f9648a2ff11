//go:build wasip1

// Command goprobe is a test plugin: a projection that tries to reach out of
// batpak's sandbox (a file, the environment, the network) and reads the
// clock and the random source, and reports what it saw as its JSON state.
// The plugin tests build it from source.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/batpak-go/batpak/sdk/guest"
)

// Report is the state.
type Report struct {
	Events   uint64 `json:"events"`
	ReadFile string `json:"read_file"` // os.ReadFile("/etc/passwd"): the error, or "read N bytes"
	Home     string `json:"home"`      // os.Getenv("HOME")
	Environ  int    `json:"environ"`   // len(os.Environ())
	Dial     string `json:"dial"`      // net.Dial("tcp", …): the error, or "connected"
	Now      string `json:"now"`       // time.Now(), RFC 3339 in UTC
	Random   string `json:"random"`    // 16 bytes of crypto/rand, hex
}

func outcome(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func init() {
	guest.Projection(func(state []byte, events guest.Batch) ([]byte, error) {
		// An event of type 0xfff asks the probe to exhaust its memory.
		hog := false
		events.Events(func(_ int, e guest.Event) bool { hog = hog || e.Type() == 0xfff; return !hog })
		if hog {
			var keep [][]byte
			for {
				keep = append(keep, make([]byte, 1<<20))
			}
		}
		var r Report
		if err := guest.JSON(state, &r); err != nil {
			return nil, err
		}
		r.Events += uint64(events.Len())

		b, err := os.ReadFile("/etc/passwd")
		r.ReadFile = outcome(err, fmt.Sprintf("read %d bytes", len(b)))
		r.Home = os.Getenv("HOME")
		r.Environ = len(os.Environ())
		c, err := net.Dial("tcp", "93.184.215.14:80")
		if err == nil {
			c.Close()
		}
		r.Dial = outcome(err, "connected")
		r.Now = time.Now().UTC().Format(time.RFC3339Nano)
		var rnd [16]byte
		_, err = rand.Read(rnd[:])
		r.Random = outcome(err, hex.EncodeToString(rnd[:]))
		return guest.ToJSON(r)
	})
}

func main() {}
