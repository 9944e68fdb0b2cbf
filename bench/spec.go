package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	"google.golang.org/protobuf/types/known/anypb"
)

// specTypeURL is the type URL containerd's clients give an OCI spec.
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// specTemplate is what `ctr run docker.io/library/busybox:1.36 ID sh` sends
// (containerd's default Unix spec for a busybox image), compacted to about
// 2 KiB. @ID@ is replaced by the container's ID.
const specTemplate = `{
  "ociVersion": "1.0.2-dev",
  "process": {
    "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
    "args": ["sh"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],
      "effective": ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"],
      "permitted": ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs"},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid","noexec","nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid","noexec","nodev","mode=1777","size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid","noexec","nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    "cgroupsPath": "/bench/@ID@",
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
    "maskedPaths": ["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],
    "readonlyPaths": ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]
  }
}`

// specParts is the compacted template split around @ID@.
var specParts = func() [][]byte {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(specTemplate)); err != nil {
		panic(fmt.Sprintf("bench spec template: %v", err))
	}
	parts := bytes.Split(b.Bytes(), []byte("@ID@"))
	if len(parts) != 2 {
		panic("bench spec template: want exactly one @ID@")
	}
	return parts
}()

// specJSON is the OCI spec of container id.
func specJSON(id string) []byte {
	b := make([]byte, 0, len(specParts[0])+len(id)+len(specParts[1]))
	b = append(b, specParts[0]...)
	b = append(b, id...)
	return append(b, specParts[1]...)
}

// newContainer is a container as ctr or nerdctl would create it: runc v2
// runtime, an overlayfs snapshot, a busybox image, an OCI spec, a few labels.
func newContainer(id string, n int) *containers.Container {
	return &containers.Container{
		ID:    id,
		Image: "docker.io/library/busybox:1.36",
		Labels: map[string]string{
			"bench.berth.dev/app":                    "web",
			"bench.berth.dev/shard":                  strconv.Itoa(n % 8),
			"io.containerd.image.config.stop-signal": "SIGTERM",
			"nerdctl/name":                           id,
		},
		Runtime:     &containers.Container_Runtime{Name: "io.containerd.runc.v2"},
		Spec:        &anypb.Any{TypeUrl: specTypeURL, Value: specJSON(id)},
		Snapshotter: "overlayfs",
		SnapshotKey: id,
	}
}
