// Command containerd-shim-berth-v2 is berth's runtime v2 shim; the logic
// lives in internal/shim.
package main

import (
	"os"
	"runtime"

	"github.com/berth-dev/berth/internal/shim"
)

// No heap profiling in a shim (the server also gets GODEBUG=memprofilerate=0
// from start, which takes effect before the packages' init allocations).
var _ = func() int { runtime.MemProfileRate = 0; return 0 }()

func main() {
	os.Exit(shim.Run(os.Args[1:]))
}
