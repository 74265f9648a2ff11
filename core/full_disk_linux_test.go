//go:build linux

package core_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
)

// A store whose disk fills up fails the write that found no room, with an
// error that says so, and keeps every event it acknowledged. It must not
// die instead: the writer copies small groups into a shared mapping of the
// active segment, and a store through a mapping into blocks the file
// system cannot supply raises SIGBUS, which kills the process (a server
// and all its tenants). The writer reserves the blocks ahead of its data
// (zeros written, or fallocate), so the reservation is what fails.

func init() { helperModes["fulldisk"] = helperFullDisk }

// fullDiskPayload is event i's payload: ~300 bytes, so that each append
// is a group small enough for the mapping (mappedWriteMax).
func fullDiskPayload(i int) string {
	return fmt.Sprintf(`{"i":%d,"p":"%s"}`, i, strings.Repeat("f", 300))
}

// fullDiskConfig is the store the full-disk test writes: segments of
// 1 MiB, so that it seals and rotates on the way; BATPAK_EVERY events per
// sync.
func fullDiskConfig(dir string) core.Config {
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = 1 << 20
	cfg.Sync.EveryNEvents, _ = strconv.Atoi(os.Getenv("BATPAK_EVERY"))
	return cfg
}

// helperFullDisk appends events until one fails, printing "ACK i" for
// each acknowledged and then "FAILED <error>"; a second append after the
// failure must fail too ("AGAIN <error>").
func helperFullDisk(dir string) error {
	s, err := core.Open(fullDiskConfig(dir))
	if err != nil {
		return err
	}
	c, _ := core.NewCoordinate("disk", "s")
	for i := 0; ; i++ {
		if _, err := s.Append(context.Background(), c, kindA, []byte(fullDiskPayload(i))); err != nil {
			fmt.Printf("FAILED %v\n", err)
			_, err = s.Append(context.Background(), c, kindA, []byte(fullDiskPayload(i)))
			fmt.Printf("AGAIN %v\n", err)
			_ = s.Close()
			return nil
		}
		fmt.Printf("ACK %d\n", i)
	}
}

func TestFullDiskFailsTheWriteAndKeepsWhatWasAcknowledged(t *testing.T) {
	for _, every := range []int{1, 1000} {
		t.Run(fmt.Sprintf("EveryNEvents=%d", every), func(t *testing.T) {
			mnt := t.TempDir()
			testenv.MountTmpfs(t, mnt, "size=4m")
			dir := filepath.Join(mnt, "store")
			c := startHelper(t, "fulldisk", dir, fmt.Sprintf("BATPAK_EVERY=%d", every))
			acked, failed, again := 0, "", ""
			for {
				ln, ok := c.line()
				if !ok {
					break
				}
				switch {
				case strings.HasPrefix(ln, "ACK "):
					if ln != fmt.Sprintf("ACK %d", acked) {
						t.Fatalf("after %d acknowledgements the helper said %q", acked, ln)
					}
					acked++
				case strings.HasPrefix(ln, "FAILED "):
					failed = ln
				case strings.HasPrefix(ln, "AGAIN "):
					again = ln
				default:
					t.Fatalf("the helper said %q", ln)
				}
			}
			if err := c.cmd.Wait(); err != nil {
				t.Fatalf("the store's process ended with %v after %d acknowledged writes (%q); stderr:\n%s", err, acked, failed, c.stderr)
			}
			if !strings.Contains(failed, "no space left on device") {
				t.Fatalf("the write that found the disk full failed with %q, want an error saying no space is left", failed)
			}
			if again == "AGAIN <nil>" || again == "" {
				t.Fatalf("after the failure, the next append said %q: the store must refuse writes until reopened", again)
			}
			if acked < 4000 {
				t.Fatalf("only %d events of ~400 bytes fitted in 4 MiB", acked)
			}

			t.Logf("%d events acknowledged; %s; %s", acked, failed, again)

			// The operator makes room; the store opens with exactly what it
			// acknowledged and takes writes again.
			testenv.ResizeTmpfs(t, mnt, "size=64m")
			s, err := core.Open(fullDiskConfig(dir))
			if err != nil {
				t.Fatalf("Open after the disk filled: %v", err)
			}
			defer s.Close()
			evs, err := s.Stream("disk")
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != acked {
				t.Fatalf("the store holds %d events after reopening, %d were acknowledged", len(evs), acked)
			}
			for i, ev := range evs {
				if string(ev.Payload) != fullDiskPayload(i) {
					t.Fatalf("event %d holds %.40q…, want payload %d", i, ev.Payload, i)
				}
			}
			if _, err := s.Append(context.Background(), mustCoord(t, "disk", "s"), kindA, []byte(fullDiskPayload(acked))); err != nil {
				t.Fatalf("Append once there is room again: %v", err)
			}
			if _, err := s.Verify(); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}
