package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// When a probe is read.
const (
	phaseIdle  = "idle"  // after start-up, a warm-up and a second of rest
	phaseAfter = "after" // after every workload and a second of rest
)

// probe is a row of the table read once from each daemon's process rather
// than measured under load. To add a row, add an entry to probes.
type probe struct {
	name  string // the row's label, unit included
	phase string
	read  func(d *daemon) (float64, error)
}

var probes = []probe{
	{name: "idle RSS (MiB)", phase: phaseIdle, read: rssMiB},
	{name: "idle PSS (MiB)", phase: phaseIdle, read: pssMiB},
	{name: "idle anon RSS (MiB)", phase: phaseIdle, read: anonMiB},
	{name: "start-up to first answer (ms)", phase: phaseIdle, read: func(d *daemon) (float64, error) {
		return float64(d.startup.Microseconds()) / 1000, nil
	}},
	{name: "RSS after load (MiB)", phase: phaseAfter, read: rssMiB},
	{name: "PSS after load (MiB)", phase: phaseAfter, read: pssMiB},
	{name: "anon RSS after load (MiB)", phase: phaseAfter, read: anonMiB},
}

// rssMiB is VmRSS from /proc/PID/status.
func rssMiB(d *daemon) (float64, error) {
	return procKiB(fmt.Sprintf("/proc/%d/status", d.pid()), "VmRSS:")
}

// pssMiB is Pss from /proc/PID/smaps_rollup: resident memory with shared
// pages divided among the processes sharing them.
func pssMiB(d *daemon) (float64, error) {
	return procKiB(fmt.Sprintf("/proc/%d/smaps_rollup", d.pid()), "Pss:")
}

// anonMiB is RssAnon from /proc/PID/status: the heap and stacks, what the
// daemon allocated itself. Unlike PSS it does not depend on other processes
// mapping the same binary, and unlike private memory not on whether the
// binary's pages in the page cache have been written back yet.
func anonMiB(d *daemon) (float64, error) {
	return procKiB(fmt.Sprintf("/proc/%d/status", d.pid()), "RssAnon:")
}

// sharers counts the other processes that run the same executable as d:
// they share its text pages, which lowers its PSS.
func sharers(d *daemon) int {
	self, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.pid()))
	if err != nil {
		return 0
	}
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == d.pid() {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == self {
			n++
		}
	}
	return n
}

// procKiB reads the "<key> N kB" line of a /proc file, in MiB.
func procKiB(path, key string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			kib, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, key, err)
			}
			return kib / 1024, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user and the system CPU time the process has used, all
// threads included, from /proc/PID/stat.
func cpuSeconds(pid int) (user, sys float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// the command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return float64(utime) / clockTicks, float64(stime) / clockTicks, nil
}
