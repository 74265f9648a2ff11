package plugincompiler_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/server/plugincompiler"
)

// A Compiler compiles in a child process (this binary again: its main, or
// here its TestMain, calls RunChild first) and stops a compile that runs
// past its limit.
func Example() {
	c, err := plugincompiler.New(plugincompiler.Limits{Timeout: 5 * time.Second, MemoryBytes: 256 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	cache, _ := os.MkdirTemp("", "plugin-cache")
	defer os.RemoveAll(cache)

	small := testmodules.Small()
	err = c.Compile(context.Background(), cache, small, small)
	fmt.Println("small module:", err)

	slow := testmodules.SlowToCompile(1000, 4000)
	err = c.Compile(context.Background(), cache, slow, slow)
	fmt.Println("slow module over the limit:", errors.Is(err, plugincompiler.ErrLimit))
	// Output:
	// small module: <nil>
	// slow module over the limit: true
}
