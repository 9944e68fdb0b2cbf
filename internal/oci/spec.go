// Package oci builds the default OCI runtime spec for a container: what
// `berth run` uses and what containerd's client would generate.
//
// Invariants: the default spec drops to containerd's default capability
// set, masks and makes read-only the same /proc and /sys paths as
// containerd, sets no_new_privileges, and places the container in the
// cgroup /<namespace>/<id>.
package oci

import (
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultCaps is containerd's default capability set.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// MaskedPaths are hidden from the container.
var MaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
	"/sys/devices/virtual/powercap", "/proc/scsi",
}

// ReadonlyPaths are mounted read-only in the container.
var ReadonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// Options shape a default spec.
type Options struct {
	Args     []string
	Env      []string // added to PATH
	Cwd      string
	Terminal bool
	Root     string // "rootfs" (bundle relative) unless set
	ReadOnly bool
	HostNet  bool
	Mounts   []specs.Mount
	Hostname string
}

// Default returns the default spec for container id in namespace ns.
func Default(ns, id string, o Options) *specs.Spec {
	caps := append([]string(nil), DefaultCaps...)
	root := o.Root
	if root == "" {
		root = "rootfs"
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = "/"
	}
	env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, o.Env...)
	if o.Terminal {
		env = append(env, "TERM=xterm")
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: o.Hostname,
		Root:     &specs.Root{Path: root, Readonly: o.ReadOnly},
		Process: &specs.Process{
			Args:            o.Args,
			Env:             env,
			Cwd:             cwd,
			Terminal:        o.Terminal,
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{
			CgroupsPath:   path.Join("/", ns, id),
			MaskedPaths:   MaskedPaths,
			ReadonlyPaths: ReadonlyPaths,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
		},
	}
	if !o.HostNet {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	} else {
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/etc/hosts", Options: []string{"rbind", "ro"}},
			specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "ro"}},
		)
	}
	s.Mounts = append(s.Mounts, o.Mounts...)
	return s
}
