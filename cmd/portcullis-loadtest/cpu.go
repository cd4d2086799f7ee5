package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUUse is the CPU time each part of the stack used during a scenario's
// measured time, read from /proc: the server (or the ceiling server), this
// driver, Redis and PostgreSQL (every process of each), and how busy the
// whole machine was. It is what says where a path's limit is: a path whose
// machine is busy is bound by what its requests cost, and the split says
// whose cost it is.
type CPUUse struct {
	Wall                            time.Duration
	Server, Driver, Redis, Postgres time.Duration
	MachineBusy                     float64 // fraction of all cores not idle
	// Switches is how many times the machine's cores switched tasks, and
	// ServerPreempted how many times a thread of the server was switched
	// out while it could still run. On this virtual machine a wakeup on a
	// core that is hashing slows the hash by far more than the wakeup's own
	// CPU (docs/benchmarks.md, the sixteenth session).
	Switches, ServerPreempted uint64

	serverPid                      int
	startTime                      time.Time
	startServer, startDriver       time.Duration
	startRedis, startPostgres      time.Duration
	startMachine, startMachineIdle uint64
	startSwitches, startPreempted  uint64
}

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// startCPU takes the first reading.
func startCPU(serverPid int) *CPUUse {
	u := &CPUUse{serverPid: serverPid, startTime: time.Now()}
	u.startServer, u.startDriver = procCPU(serverPid), procCPU(os.Getpid())
	u.startRedis, u.startPostgres = namedCPU("redis-server"), namedCPU("postgres")
	u.startMachine, u.startMachineIdle, u.startSwitches = machineCPU()
	u.startPreempted = preemptions(serverPid)
	return u
}

// stop takes the second reading and fills in the differences.
func (u *CPUUse) stop() {
	u.Wall = time.Since(u.startTime)
	u.Server = procCPU(u.serverPid) - u.startServer
	u.Driver = procCPU(os.Getpid()) - u.startDriver
	u.Redis = namedCPU("redis-server") - u.startRedis
	u.Postgres = namedCPU("postgres") - u.startPostgres
	total, idle, switches := machineCPU()
	if d := total - u.startMachine; d > 0 {
		u.MachineBusy = 1 - float64(idle-u.startMachineIdle)/float64(d)
	}
	u.Switches = counted(u.startSwitches, switches)
	u.ServerPreempted = counted(u.startPreempted, preemptions(u.serverPid))
}

// counted is the increase of a counter from start to end, 0 when it went
// down (a thread that ended took its count with it).
func counted(start, end uint64) uint64 {
	if end < start {
		return 0
	}
	return end - start
}

// cores is d as cores busy over the measured time.
func (u *CPUUse) cores(d time.Duration) float64 {
	if u.Wall <= 0 {
		return 0
	}
	return d.Seconds() / u.Wall.Seconds()
}

// String is the split as the report shows it.
func (u *CPUUse) String() string {
	return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f, %.0f%% busy", u.cores(u.Server), u.cores(u.Driver), u.cores(u.Redis),
		u.cores(u.Postgres), 100*u.MachineBusy)
}

// procCPU is the user+system CPU time process pid has used (0 when gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 { // fields 14 and 15 of stat: utime, stime
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// namedCPU is the CPU time used by every process whose command is name.
func namedCPU(name string) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		sum += procCPU(pid)
	}
	return sum
}

// field is the number after prefix on the first line of text that starts
// with it (0 when none).
func field(text, prefix string) uint64 {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// preemptions is how many times process pid's live threads have been
// switched out while runnable (nonvoluntary_ctxt_switches, summed over
// /proc/pid/task; 0 when gone).
func preemptions(pid int) uint64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err == nil {
			sum += field(string(b), "nonvoluntary_ctxt_switches:")
		}
	}
	return sum
}

// machineCPU is the machine's total and idle (idle + iowait) ticks, and
// how many times its cores have switched tasks since boot (ctxt), from
// one read of /proc/stat (zeros when unreadable).
func machineCPU() (total, idle, switches uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	switches = field(string(b), "ctxt ")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return total, idle, switches
}
