package runtime

import "testing"

func TestUserNamespaceRoot(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want int
	}{
		{`{}`, -1},
		{`not json`, -1},
		{`{"linux":{}}`, -1},
		{`{"linux":{"gidMappings":[{"containerID":1,"hostID":200000,"size":10}]}}`, -1},
		{`{"linux":{"gidMappings":[{"containerID":1000,"hostID":5,"size":1},{"containerID":0,"hostID":100000,"size":65536}]}}`, 100000},
	} {
		if got := userNamespaceRoot([]byte(tc.spec)); got != tc.want {
			t.Errorf("userNamespaceRoot(%s) = %d, want %d", tc.spec, got, tc.want)
		}
	}
}
