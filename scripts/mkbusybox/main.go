// Command mkbusybox writes a busybox image archive built from the host's
// static busybox: `go run ./scripts/mkbusybox busybox.tar`.
package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/internal/testutil/busybox"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mkbusybox ARCHIVE.tar")
		os.Exit(2)
	}
	if err := busybox.WriteArchive(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
	fmt.Println(busybox.Ref)
}
