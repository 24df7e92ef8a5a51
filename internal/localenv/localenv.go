// Package localenv answers two questions the tools that start local
// processes ask: where the module's root is (for .cache/) and which loopback
// ports are free.
package localenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ModuleRoot walks up from the working directory to the directory that holds
// go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment
// ago and that this process has not handed out before. They are drawn below
// the kernel's ephemeral range: a port the kernel picked for a listener on
// :0 is one it may pick again for an outgoing connection (to Kafka, to
// PostgreSQL) in the moment before the process it was meant for binds it.
func FreePorts(n int) ([]int, error) {
	low := ephemeralLow()
	handedMu.Lock()
	defer handedMu.Unlock()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("find a free port below %d: 1000 tries", low)
		}
		port := portFloor + rand.IntN(low-portFloor) //nolint:gosec // G404: a test port, not a secret
		if handed[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		handed[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// portFloor is the lowest port FreePorts hands out.
const portFloor = 20000

var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

// ephemeralLow is the start of the kernel's ephemeral port range, 32768
// (Linux's default) when it cannot be read.
func ephemeralLow() int {
	const def = 32768
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return def
	}
	fields := strings.Fields(string(raw))
	if len(fields) != 2 {
		return def
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= portFloor+1000 {
		return def
	}
	return low
}
