package membership

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/internal/testenv"
	aboutv1alpha1 "github.com/clusterset/clusterset/pkg/apis/about/v1alpha1"
	"github.com/clusterset/clusterset/pkg/registry"
	"github.com/clusterset/clusterset/pkg/registry/hub"
)

// Join leaves in the member a hub kubeconfig with which the member can publish
// its records and heartbeat, plus its identity; joining again rotates the
// token; a conflicting identity is refused.
func TestJoin(t *testing.T) {
	ctx := context.Background()
	hubCP, memberCP := testenv.Start(t), testenv.Start(t)
	o := Options{ClusterID: "cls2", ClusterSetID: "set1", TokenTTL: time.Hour}

	var out bytes.Buffer
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join: %v\n%s", err, out.String())
	}
	if err := Join(ctx, &out, hubCP.Config, memberCP.Config, o); err != nil {
		t.Fatalf("join again (token rotation): %v", err)
	}

	var secret corev1.Secret
	if err := memberCP.Client.Get(ctx, client.ObjectKey{Namespace: HubSecretNamespace, Name: HubSecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	hubCfg, err := HubConfig(&secret, HubSecretKey)
	if err != nil {
		t.Fatalf("the secret's kubeconfig: %v", err)
	}
	if hubCfg.BearerToken == "" || hubCfg.Host != hubCP.Config.Host {
		t.Fatalf("kubeconfig for %s with token %t, want the hub %s with a token", hubCfg.Host, hubCfg.BearerToken != "", hubCP.Config.Host)
	}
	reg, err := hub.New(hub.Options{ClusterSetID: "set1", ClusterID: "cls2", Config: hubCfg})
	if err != nil {
		t.Fatal(err)
	}
	rec := &registry.Record{ClusterSetID: "set1", ClusterID: "cls2", Namespace: "demo", Name: "web",
		Spec: registry.ServiceSpec{Type: registry.ClusterSetIP, ExportCreated: time.Now()}}
	if err := reg.Publish(ctx, rec); err != nil {
		t.Fatalf("publishing with the member's hub credentials: %v", err)
	}
	if err := reg.Heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat with the member's hub credentials: %v", err)
	}
	// The hub holds nothing of the member's credentials: no Secret or
	// ConfigMap anywhere on it carries the token or anything of the
	// member's kubeconfig, and the Secrets its tokens are bound to are empty.
	var hubSecrets corev1.SecretList
	var hubConfigMaps corev1.ConfigMapList
	if err := hubCP.Client.List(ctx, &hubSecrets); err != nil {
		t.Fatal(err)
	}
	if err := hubCP.Client.List(ctx, &hubConfigMaps); err != nil {
		t.Fatal(err)
	}
	memberToken := string(secret.Data[HubSecretTokenKey])
	for _, s := range hubSecrets.Items {
		if s.Labels[hub.LabelKind] == hub.KindToken && len(s.Data) > 0 {
			t.Errorf("token Secret %s/%s on the hub holds data", s.Namespace, s.Name)
		}
		for k, v := range s.Data {
			if strings.Contains(string(v), memberToken) || strings.Contains(string(v), memberCP.Config.Host) {
				t.Errorf("Secret %s/%s on the hub holds the member's token or address under %s", s.Namespace, s.Name, k)
			}
		}
	}
	for _, cm := range hubConfigMaps.Items {
		for k, v := range cm.Data {
			if strings.Contains(v, memberToken) || strings.Contains(v, memberCP.Config.Host) {
				t.Errorf("ConfigMap %s/%s on the hub holds the member's token or address under %s", cm.Namespace, cm.Name, k)
			}
		}
	}

	var prop aboutv1alpha1.ClusterProperty
	if err := memberCP.Client.Get(ctx, client.ObjectKey{Name: aboutv1alpha1.ClusterIDName}, &prop); err != nil || prop.Spec.Value != "cls2" {
		t.Fatalf("ClusterProperty %s = %q (%v), want cls2", aboutv1alpha1.ClusterIDName, prop.Spec.Value, err)
	}
	// A hub reached without TLS verification, or over http, is refused
	// before anything is written, unless allowed.
	insecure := rest.CopyConfig(hubCP.Config)
	insecure.Insecure, insecure.CAData = true, nil
	for name, try := range map[string]func() error{
		"insecure-skip-tls-verify": func() error { return Join(ctx, &out, insecure, memberCP.Config, o) },
		"http": func() error {
			plain := o
			plain.HubServer = "http://" + strings.TrimPrefix(hubCP.Config.Host, "https://")
			return Join(ctx, &out, hubCP.Config, memberCP.Config, plain)
		},
	} {
		if err := try(); err == nil || !strings.Contains(err.Error(), "--allow-insecure-hub") {
			t.Errorf("join with %s: err = %v, want a refusal naming --allow-insecure-hub", name, err)
		}
	}
	allowed := o
	allowed.AllowInsecureHub, allowed.KeepPreviousTokens = true, true
	if err := Join(ctx, &out, insecure, memberCP.Config, allowed); err != nil {
		t.Errorf("join with insecure-skip-tls-verify and --allow-insecure-hub: %v", err)
	}

	o.ClusterID = "other"
	err = Join(ctx, &out, hubCP.Config, memberCP.Config, o)
	if err == nil || !strings.Contains(err.Error(), "must not change") {
		t.Fatalf("joining under another cluster ID: err = %v, want a refusal", err)
	}
	var nsList corev1.NamespaceList
	if err := hubCP.Client.List(ctx, &nsList); err != nil {
		t.Fatal(err)
	}
	for _, ns := range nsList.Items {
		if ns.Name == hub.NamespaceName("set1", "other") {
			t.Fatalf("a refused join created hub namespace %s", ns.Name)
		}
	}
}

// IDs the controller would refuse are refused before join reads or writes
// anything (the configs here reach no cluster); IDs at their limit are
// checked in TestIDRules and used end to end in TestNameLimits.
func TestJoinRefusesInvalidIDs(t *testing.T) {
	for _, o := range []Options{
		{ClusterID: strings.Repeat("c", registry.MaxClusterIDLength+1), ClusterSetID: "set1"},
		{ClusterID: "cls1", ClusterSetID: strings.Repeat("s", 60) + "." + strings.Repeat("s", 60) + "." + strings.Repeat("s", 60) + "." + strings.Repeat("s", 60) + "." + strings.Repeat("s", 10)},
		{ClusterID: "", ClusterSetID: "set1"},
	} {
		err := Join(context.Background(), io.Discard, nil, nil, o)
		if err == nil || !strings.Contains(err.Error(), "-id:") {
			t.Errorf("join of %d-character cluster ID and %d-character clusterset ID: got %v, want a refusal naming the flag", len(o.ClusterID), len(o.ClusterSetID), err)
		}
	}
}
