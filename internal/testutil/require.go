// Package testutil starts berthd for tests and checks what tests need.
//
// Invariant: a test whose requirement (root, a binary, a kernel feature) is
// missing is skipped on a developer's machine but fails under CI=true, so a
// CI run can never pass by skipping.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Require skips (or, under CI, fails) the test when ok is false.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("requirement missing under CI: %s (the setup script must install it)", what)
	}
	t.Skipf("requirement missing: %s", what)
}

// RequireRoot needs the test to run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root")
}

// RequireBinary needs name on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, name+" on PATH")
	return p
}
