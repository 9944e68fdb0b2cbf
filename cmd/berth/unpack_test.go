package main

import (
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// TestChainIDs checks the chain IDs of the OCI image spec's example.
func TestChainIDs(t *testing.T) {
	a := digest.Digest("sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4")
	b := digest.Digest("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")
	got := chainIDs([]digest.Digest{a, b})
	if got[0] != a {
		t.Errorf("chain of one layer %s, want its diff_id", got[0])
	}
	if want := digest.FromString(a.String() + " " + b.String()); got[1] != want {
		t.Errorf("chain %s, want %s", got[1], want)
	}
}
