// Package kafkatest starts a real, single-node Apache Kafka broker (KRaft) for
// integration and end-to-end tests, from the jars that scripts/kafka-jars.sh
// resolves with Maven, on the machine's Java.
package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/localenv"

	"github.com/segmentio/kafka-go"
)

// startTimeout bounds formatting the storage and starting the broker.
const startTimeout = 60 * time.Second

// jvmFlags make a short-lived broker start fast and stay small.
var jvmFlags = []string{
	"-Xms64m", "-Xmx512m", "-XX:+UseSerialGC",
	"-XX:TieredStopAtLevel=1", "-Xshare:auto",
	"-Djava.awt.headless=true",
}

var libs struct {
	once sync.Once
	dir  string
	err  error
}

// StartApache starts a broker in t.TempDir() on free 127.0.0.1 ports and
// returns its bootstrap address once it answers metadata requests. It is
// killed when the test ends; its log is printed if the test failed. Topics are
// not created automatically.
func StartApache(t testing.TB) (brokers []string) {
	t.Helper()
	libs.once.Do(func() { libs.dir, libs.err = resolveJars() })
	if libs.err != nil {
		t.Fatalf("kafkatest: %v", libs.err)
	}
	dir := t.TempDir()
	ports, err := localenv.FreePorts(2)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	controller := fmt.Sprintf("127.0.0.1:%d", ports[1])
	props := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(props, []byte(serverProperties(addr, controller, filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	log4j := filepath.Join(dir, "log4j.properties")
	if err := os.WriteFile(log4j, []byte(log4jProperties), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kafka.log")
	logFile, err := os.Create(logPath) //nolint:gosec // G304: a file in t.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := logFile.Close(); err != nil {
			t.Logf("kafkatest: close broker log: %v", err)
		}
	})
	printLog := func() {
		b, _ := os.ReadFile(logPath) //nolint:gosec // G304: a file in t.TempDir()
		t.Logf("kafkatest: broker log (%s):\n%s", logPath, b)
	}

	java := func(ctx context.Context, args ...string) *exec.Cmd {
		all := append(append([]string{}, jvmFlags...),
			"-Dlog4j.configuration=file:"+log4j,
			"-cp", filepath.Join(libs.dir, "*"))
		cmd := exec.CommandContext(ctx, "java", append(all, args...)...) //nolint:gosec // G204: our own JVM flags, class names and temp files
		cmd.Stdout, cmd.Stderr = logFile, logFile
		return cmd
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := java(ctx, "kafka.tools.StorageTool", "format", "--ignore-formatted",
		"-t", clusterID(), "-c", props).Run(); err != nil {
		printLog()
		t.Fatalf("kafkatest: format storage: %v", err)
	}
	formatted := time.Since(start)

	broker := java(context.Background(), "kafka.Kafka", props)
	if err := broker.Start(); err != nil {
		t.Fatalf("kafkatest: start broker: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- broker.Wait() }()
	t.Cleanup(func() {
		// The data is thrown away: no need for a clean shutdown.
		_ = broker.Process.Kill()
		<-exited
		if t.Failed() || os.Getenv("KAFKATEST_LOG") != "" {
			printLog()
		}
	})

	if err := waitReady(ctx, addr, exited); err != nil {
		printLog()
		t.Fatalf("kafkatest: broker on %s: %v", addr, err)
	}
	t.Logf("kafkatest: Apache Kafka on %s ready in %s (storage format %s)", addr, time.Since(start).Round(time.Millisecond), formatted.Round(time.Millisecond))
	return []string{addr}
}

// waitReady polls the broker's metadata until it lists itself.
func waitReady(ctx context.Context, addr string, exited <-chan error) error {
	transport := &kafka.Transport{ClientID: "kafkatest"}
	defer transport.CloseIdleConnections()
	var last error
	for {
		client := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 2 * time.Second, Transport: transport}
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			return nil
		}
		if err != nil {
			last = err
			// A failed first dial leaves the pool broken: start afresh.
			transport.CloseIdleConnections()
			transport = &kafka.Transport{ClientID: "kafkatest"}
		}
		select {
		case err := <-exited:
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("exited before it was ready: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", startTimeout, errors.Join(ctx.Err(), last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func serverProperties(addr, controller, dataDir string) string {
	return strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		"controller.quorum.voters=1@" + controller,
		"listeners=PLAINTEXT://" + addr + ",CONTROLLER://" + controller,
		"advertised.listeners=PLAINTEXT://" + addr,
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"controller.listener.names=CONTROLLER",
		"inter.broker.listener.name=PLAINTEXT",
		"log.dirs=" + dataDir,
		"auto.create.topics.enable=false",
		"num.partitions=1",
		"default.replication.factor=1",
		"min.insync.replicas=1",
		"offsets.topic.replication.factor=1",
		"offsets.topic.num.partitions=4",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"group.initial.rebalance.delay.ms=0",
		"log.flush.interval.messages=9223372036854775807",
		"",
	}, "\n")
}

const log4jProperties = `log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
`

// clusterID is a random Kafka cluster id: 16 bytes in unpadded base64url,
// not starting with "-", which the storage tool would take for a flag.
func clusterID() string {
	for {
		var b [16]byte
		_, _ = rand.Read(b[:])
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}

// resolveJars runs scripts/kafka-jars.sh from the module root.
func resolveJars() (string, error) {
	root, err := localenv.ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "kafka-jars.sh")) //nolint:gosec // G204: the module's own script
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/kafka-jars.sh: %w\n%s", err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	if jars, _ := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar")); len(jars) == 0 {
		return "", fmt.Errorf("scripts/kafka-jars.sh printed %q, which holds no kafka_2.13 jar", dir)
	}
	return dir, nil
}
