package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterset/clusterset/internal/prereq"
)

// TestClientAndPauseImagesInContainerd builds the client and pause images
// as `make images` does, twice, and checks that the two builds are the same
// image; then imports them into a private containerd with ctr, the way a
// node gets them, and runs both: the client as non-root with its tools, the
// pause container until SIGTERM.
func TestClientAndPauseImagesInContainerd(t *testing.T) {
	needTool(t, DefaultBusybox, "apt-get install busybox-static")
	needTool(t, DefaultCACertificates, "apt-get install ca-certificates")
	for _, tool := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			path = tool
		}
		needTool(t, path, "apt-get install containerd (it brings ctr, runc and the shim)")
	}
	if os.Geteuid() != 0 {
		prereq.Missing(t, "containerd runs containers only as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	names := []string{"client", "pause"}
	var builds [2][]Result
	for i := range builds {
		var err error
		opts := Options{Root: repoRoot(t), OutDir: t.TempDir(), Progress: logWriter{t}}
		if builds[i], err = Build(ctx, opts, names); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range builds[0] {
		again := builds[1][i]
		if r.Digest != again.Digest {
			t.Errorf("%s: two builds gave %s and %s", r.Name, r.Digest, again.Digest)
		}
		a, _ := os.ReadFile(r.Path)
		b, _ := os.ReadFile(again.Path)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two builds wrote different tarballs", r.Name)
		}
	}
	list, err := os.ReadFile(filepath.Join(filepath.Dir(builds[0][0].Path), "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range builds[0] {
		if line := r.Name + " " + r.Ref + " " + r.Digest; !strings.Contains(string(list), line+"\n") {
			t.Errorf("images.txt lacks %q:\n%s", line, list)
		}
	}

	ctd := startContainerd(t)
	for _, r := range builds[0] {
		ctd.ctr(ctx, t, "images", "import", r.Path)
	}
	listed := map[string]string{} // reference -> digest
	for _, line := range strings.Split(ctd.ctr(ctx, t, "images", "ls"), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 3 {
			listed[f[0]] = f[2]
		}
	}
	for _, r := range builds[0] {
		// containerd keeps the manifest as written, so it lists the digest
		// of images.txt.
		if listed[r.Ref] != r.Digest {
			t.Errorf("ctr images ls: %s has digest %q, want %s (all: %v)", r.Ref, listed[r.Ref], r.Digest, listed)
		}
	}
	clientRef, pauseRef := builds[0][0].Ref, builds[0][1].Ref

	suffix := fmt.Sprint(time.Now().UnixNano())
	// The closing sleep keeps the task alive while ctr drains its output:
	// ctr (containerd 1.6) can lose what a task writes just before it
	// exits, which cut this output short on a loaded machine.
	got := ctd.ctr(ctx, t, "run", "--rm", clientRef, "client-"+suffix, "sh", "-c",
		"id -u; id -g; readlink /bin/nslookup; test -s /etc/ssl/certs/ca-certificates.crt && echo certs; echo $PATH; touch /tmp/x && echo tmp; sleep 1")
	if want := "65532\n65532\nbusybox\ncerts\n/bin\ntmp\n"; got != want {
		t.Errorf("client container printed %q, want %q", got, want)
	}

	id := "pause-" + suffix
	run := exec.CommandContext(ctx, "ctr", ctd.args("run", "--rm", pauseRef, id)...)
	var runOut bytes.Buffer
	run.Stdout, run.Stderr = &runOut, &runOut
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	waitRunning(ctx, t, ctd, id, exited, &runOut)
	ctd.ctr(ctx, t, "task", "kill", "-s", "SIGTERM", id)
	select {
	case err := <-exited:
		// ctr run exits with the container's status.
		if err != nil {
			t.Errorf("pause container after SIGTERM: %v (want exit 0); output: %s", err, runOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("pause container still runs 15s after SIGTERM; output: %s", runOut.String())
	}
}

// waitRunning waits until ctr lists task id as RUNNING.
func waitRunning(ctx context.Context, t *testing.T, ctd *containerd, id string, exited chan error, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("container %s exited before SIGTERM: %v; output: %s", id, err, out.String())
		default:
		}
		for _, line := range strings.Split(ctd.ctr(ctx, t, "task", "ls"), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %s never ran", id)
}

// containerd is a private containerd: its own root, state and sockets in a
// temporary directory, so that it shares nothing with a containerd of the
// machine.
type containerd struct {
	socket string
}

func (c *containerd) args(args ...string) []string {
	return append([]string{"--address", c.socket, "-n", "k8s.io"}, args...)
}

// ctr runs ctr against c and returns its standard output, failing the test
// when it fails.
func (c *containerd) ctr(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ctr", c.args(args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ctr %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{socket: filepath.Join(dir, "containerd.sock")}
	// The CRI plugin is off: it would want CNI and more, and ctr does not
	// use it. The opt plugin would otherwise write to /opt/containerd.
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket, c.socket+".ttrpc", filepath.Join(dir, "opt"))
	configPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		// Containers the test left behind (it failed half-way) go first, so
		// that no shim or mount outlives the directory.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "ctr", c.args("task", "ls", "-q")...).Output()
		for _, id := range strings.Fields(string(out)) {
			exec.CommandContext(ctx, "ctr", c.args("task", "kill", "-s", "SIGKILL", id)...).Run()
			exec.CommandContext(ctx, "ctr", c.args("task", "rm", "-f", id)...).Run()
		}
		out, _ = exec.CommandContext(ctx, "ctr", c.args("containers", "ls", "-q")...).Output()
		for _, id := range strings.Fields(string(out)) {
			exec.CommandContext(ctx, "ctr", c.args("containers", "rm", id)...).Run()
		}
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if log, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("containerd log:\n%s", log)
			}
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := exec.Command("ctr", "--address", c.socket, "version").Run(); err == nil {
			return c
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("containerd exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not answer within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
