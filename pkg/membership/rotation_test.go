package membership

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/clusterset/clusterset/internal/testenv"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

func init() { log.SetLogger(logr.Discard()) }

// TestTokenRotation rotates a member's hub token with `join` while the
// member writes to the hub without pause, the way clusterset-controller does
// from the mounted Secret: no request fails, the member picks up the new
// token without a restart, and join revokes the previous one only after
// that, at which point the hub refuses it.
func TestTokenRotation(t *testing.T) {
	ctx := context.Background()
	hubCP, memberCP := testenv.Start(t), testenv.Start(t)
	o := Options{ClusterID: "cls2", ClusterSetID: "set1", TokenTTL: time.Hour, Poll: 100 * time.Millisecond, RevokeTimeout: time.Minute, RevokeGrace: 500 * time.Millisecond}
	var out bytes.Buffer
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join: %v\n%s", err, out.String())
	}
	m := mountSecret(t, memberCP.Client)
	first := m.token(t)

	member := startWriter(t, m.dir, time.Hour)
	member.waitForWrites(t, 5)

	out.Reset()
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join again: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "revoked 1 previous token") {
		t.Errorf("join again said:\n%s\nwant that it revoked the previous token", out.String())
	}
	second := m.token(t)
	if second == first {
		t.Fatal("join again left the same token in the Secret")
	}
	member.waitForWrites(t, 5)
	if n := member.stop(); n != 0 {
		t.Errorf("%d of the member's requests failed during the rotation, want none", n)
	}
	hb, err := hub.MemberHeartbeat(ctx, kubernetes.NewForConfigOrDie(hubCP.Config), o.ClusterSetID, o.ClusterID)
	if err != nil || hb.Credential != hub.CredentialDigest(second) {
		t.Errorf("heartbeat names credential %q (%v), want the new token's %q", hb.Credential, err, hub.CredentialDigest(second))
	}
	wantRefused(t, hubCP.Config, first)
	if err := requestAs(hubCP.Config, second); err != nil {
		t.Errorf("the new token: %v", err)
	}
}

// TestTokenRotationWaitsForTheMember: join revokes the previous tokens only
// when that cuts off no running controller. It leaves them valid, and says
// so, when the member's controller keeps renewing its heartbeat with an old
// token past the timeout, or does not report its token at all; it does not
// wait with KeepPreviousTokens; and it revokes them once the heartbeat
// stops being renewed (the controller is down).
func TestTokenRotationWaitsForTheMember(t *testing.T) {
	ctx := context.Background()
	hubCP, memberCP := testenv.Start(t), testenv.Start(t)
	o := Options{ClusterID: "cls2", ClusterSetID: "set1", TokenTTL: time.Hour, Poll: 100 * time.Millisecond, RevokeTimeout: 3 * time.Second}
	var out bytes.Buffer
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join: %v\n%s", err, out.String())
	}
	m := mountSecret(t, memberCP.Client)
	first := m.token(t)
	// The kubelet stops updating the Secret's files: the controller keeps
	// the first token. A lease of 5s makes the wait for it 10s, and a
	// writer that stalls for less is not taken for stopped.
	m.stop()
	member := startWriter(t, m.dir, 5*time.Second)
	member.waitForWrites(t, 2)

	err := Join(ctx, &out, hubCP.Config, memberCP.Config, o)
	if err == nil || !strings.Contains(err.Error(), "previous tokens stay valid") {
		t.Fatalf("join while the controller uses the old token: err = %v, want that the previous tokens stay valid", err)
	}
	keep := o
	keep.KeepPreviousTokens, keep.RevokeTimeout = true, time.Hour
	start := time.Now()
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, keep); err != nil {
		t.Fatalf("join --keep-previous-tokens: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("join --keep-previous-tokens took %v, want no wait", d)
	}
	if err := requestAs(hubCP.Config, first); err != nil {
		t.Errorf("the first token after joins that revoked nothing: %v", err)
	}
	if n := member.stop(); n != 0 {
		t.Errorf("%d of the member's requests failed, want none", n)
	}

	// A controller that does not report its token (here: a client
	// certificate impersonating the member's ServiceAccount).
	silent := startWriterWith(t, impersonating(hubCP.Config, "system:serviceaccount:"+hub.NamespaceName("set1", "cls2")+":"+hub.MemberServiceAccount), 5*time.Second)
	silent.waitForWrites(t, 2)
	out.Reset()
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil || !strings.Contains(out.String(), "does not report which token it uses") {
		t.Fatalf("join while the controller reports no token: err = %v, output:\n%s\nwant success and that the previous tokens stay valid", err, out.String())
	}
	silent.stop()

	// The controller with the first token renews once more, then stops.
	member = startWriter(t, m.dir, time.Second)
	member.waitForWrites(t, 2)
	member.stop()
	o.RevokeTimeout = time.Minute
	out.Reset()
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil || !strings.Contains(out.String(), "its controller is not running") {
		t.Fatalf("join while the controller is down: err = %v, output:\n%s\nwant that it revoked the previous tokens", err, out.String())
	}
	wantRefused(t, hubCP.Config, first)
}

// TestTokenReadAgainAfterRefusal: a member whose token was revoked before it
// read the new one from the file (here: it reads the file only every hour)
// reads the file at once after the hub refuses the old token, so it fails
// no more than the requests the hub refused.
func TestTokenReadAgainAfterRefusal(t *testing.T) {
	ctx := context.Background()
	hubCP, memberCP := testenv.Start(t), testenv.Start(t)
	o := Options{ClusterID: "cls2", ClusterSetID: "set1", TokenTTL: time.Hour, KeepPreviousTokens: true}
	var out bytes.Buffer
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join: %v\n%s", err, out.String())
	}
	m := mountSecret(t, memberCP.Client)
	first := m.token(t)
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: filepath.Join(m.dir, HubSecretKey)}, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	member := startWriterReloading(t, cfg, 30*time.Second, time.Hour)
	member.waitForWrites(t, 2)

	var anchors corev1.SecretList
	if err := hubCP.Client.List(ctx, &anchors, client.InNamespace(hub.NamespaceName("set1", "cls2")), client.MatchingLabels{hub.LabelKind: hub.KindToken}); err != nil || len(anchors.Items) != 1 {
		t.Fatalf("token Secrets on the hub: %d (%v), want 1", len(anchors.Items), err)
	}
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join again: %v\n%s", err, out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.token(t) == first {
		if time.Now().After(deadline) {
			t.Fatal("the new token was not mounted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Revoke the first token by hand while the member still holds it.
	if err := hubCP.Client.Delete(ctx, &anchors.Items[0]); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, hubCP.Config, first)
	member.waitForWrites(t, 5)
	if n := member.stop(); n > 4 {
		t.Errorf("%d of the member's requests failed, want at most the few the hub refused before it read the file again", n)
	}
}

func impersonating(cfg *rest.Config, user string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return cfg
}

// mounted is a member Secret as the kubelet mounts it: a directory of one
// file per key, swapped atomically through a "..data" symlink on every
// change of the Secret, polled every 100ms.
type mounted struct {
	dir  string
	done chan struct{}
	wg   sync.WaitGroup
}

func mountSecret(t *testing.T, c client.Client) *mounted {
	t.Helper()
	m := &mounted{dir: t.TempDir(), done: make(chan struct{})}
	version := ""
	sync := func() error {
		var s corev1.Secret
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: HubSecretNamespace, Name: HubSecretName}, &s); err != nil {
			return err
		}
		if s.ResourceVersion == version {
			return nil
		}
		data := filepath.Join(m.dir, "..v"+s.ResourceVersion)
		if err := os.Mkdir(data, 0o755); err != nil {
			return err
		}
		for k, v := range s.Data {
			if err := os.WriteFile(filepath.Join(data, k), v, 0o600); err != nil {
				return err
			}
			if _, err := os.Lstat(filepath.Join(m.dir, k)); os.IsNotExist(err) {
				if err := os.Symlink(filepath.Join("..data", k), filepath.Join(m.dir, k)); err != nil {
					return err
				}
			}
		}
		tmp := filepath.Join(m.dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(data), tmp); err != nil {
			return err
		}
		version = s.ResourceVersion
		return os.Rename(tmp, filepath.Join(m.dir, "..data"))
	}
	if err := sync(); err != nil {
		t.Fatal(err)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.done:
				return
			case <-time.After(100 * time.Millisecond):
				if err := sync(); err != nil {
					t.Errorf("mounting the Secret: %v", err)
					return
				}
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *mounted) stop() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	m.wg.Wait()
}

func (m *mounted) token(t *testing.T) string {
	t.Helper()
	// The kubelet's update lags the Secret; so does this one's.
	var tok []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(m.dir, HubSecretTokenKey))
		if err == nil && len(b) > 0 {
			tok = b
		}
		if time.Now().After(deadline) || tok != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tok == nil {
		t.Fatal("no token mounted")
	}
	return string(tok)
}

// writer is a member writing to the hub from the mounted kubeconfig without
// pause: a heartbeat and a changed record every 50ms.
type writer struct {
	writes, failures atomic.Int64
	lastErr          atomic.Value
	done             chan struct{}
	finished         chan struct{}
}

func startWriter(t *testing.T, dir string, lease time.Duration) *writer {
	t.Helper()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: filepath.Join(dir, HubSecretKey)}, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return startWriterWith(t, cfg, lease)
}

// startWriterWith is startWriter with the hub config cfg. Its heartbeat
// announces lease.
func startWriterWith(t *testing.T, cfg *rest.Config, lease time.Duration) *writer {
	t.Helper()
	return startWriterReloading(t, cfg, lease, 200*time.Millisecond)
}

// startWriterReloading is startWriterWith, reading the token file every
// reload.
func startWriterReloading(t *testing.T, cfg *rest.Config, lease, reload time.Duration) *writer {
	t.Helper()
	reg, err := hub.New(hub.Options{ClusterSetID: "set1", ClusterID: "cls2", Config: cfg, TokenReloadInterval: reload, LeaseDuration: lease})
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-w.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			rec := &registry.Record{ClusterSetID: "set1", ClusterID: "cls2", Namespace: "demo", Name: "web",
				Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, ExportCreated: time.Unix(1e9, 0),
					Ports: []registry.Port{{Name: "http", Protocol: corev1.ProtocolTCP, Port: int32(1000 + i%2)}}}}
			for _, err := range []error{reg.Heartbeat(ctx), reg.Publish(ctx, rec)} {
				if err != nil {
					w.failures.Add(1)
					w.lastErr.Store(err.Error())
				} else {
					w.writes.Add(1)
				}
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *writer) waitForWrites(t *testing.T, n int64) {
	t.Helper()
	target := w.writes.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for w.writes.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the member wrote %d times in 30s, want %d more; last error: %v", w.writes.Load(), n, w.lastErr.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the writer and returns how many of its requests failed.
func (w *writer) stop() int64 {
	select {
	case <-w.done:
		<-w.finished
	default:
		close(w.done)
		<-w.finished
		if n := w.failures.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "the writer's last failure: %v\n", w.lastErr.Load())
		}
	}
	return w.failures.Load()
}

// requestAs asks the hub who token is (SelfSubjectReview, allowed to every
// authenticated caller).
func requestAs(hubCfg *rest.Config, token string) error {
	cfg := rest.AnonymousClientConfig(hubCfg)
	cfg.BearerToken = token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = c.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	return err
}

// wantRefused waits up to 20s for the hub to refuse token: kube-apiserver
// caches a successful token authentication for 10s.
func wantRefused(t *testing.T, hubCfg *rest.Config, token string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := requestAs(hubCfg, token)
		if apierrors.IsUnauthorized(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token: err = %v, want Unauthorized", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
