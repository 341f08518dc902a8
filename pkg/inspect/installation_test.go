package inspect

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/clusterset/clusterset/internal/scheme"
)

func deployment(containers ...corev1.Container) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: ControllerName},
		Spec:       appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}}},
	}
}

// flagOf reads flags as Go's flag package does: one or two dashes, "=" or
// a separate value, the last one wins, nothing after "--".
func TestFlagOf(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--registry=cloudmap"}, "cloudmap"},
		{[]string{"--registry", "cloudmap"}, "cloudmap"},
		{[]string{"-registry=cloudmap"}, "cloudmap"},
		{[]string{"--registry=hub", "--leader-elect", "--registry=cloudmap"}, "cloudmap"},
		{[]string{"--registry-x=cloudmap"}, ""},
		{[]string{"--", "--registry=cloudmap"}, ""},
		{[]string{"--registry"}, ""},
		{nil, ""},
	} {
		if got := flagOf(corev1.Container{Args: tc.args}, "registry"); got != tc.want {
			t.Errorf("flagOf(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// The region is read from the controller's container only, by the
// kubelet's precedence; what cannot be known here is "".
func TestEnvOf(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}, Data: map[string]string{"AWS_REGION": "from-a", "PFX_AWS_REGION": "prefixed"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}, Data: map[string]string{"AWS_REGION": "from-b"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "a"}, Data: map[string]string{"AWS_REGION": "wrong-namespace"}},
	).Build()
	fromCM := func(name string) []corev1.EnvFromSource {
		return []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}}
	}
	ctrl := func(env []corev1.EnvVar, from []corev1.EnvFromSource) corev1.Container {
		return corev1.Container{Name: "controller", Args: []string{"--registry=cloudmap"}, Env: env, EnvFrom: from}
	}
	sidecar := corev1.Container{Name: "proxy", Env: []corev1.EnvVar{{Name: "AWS_REGION", Value: "sidecar"}}}
	for _, tc := range []struct {
		name string
		d    *appsv1.Deployment
		want string
	}{
		{"literal", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", Value: "eu-west-1"}}, nil)), "eu-west-1"},
		{"the last entry wins", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", Value: "first"}, {Name: "AWS_REGION", Value: "last"}}, nil)), "last"},
		{"env wins over envFrom", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", Value: "env"}}, fromCM("a"))), "env"},
		{"envFrom ConfigMap", deployment(ctrl(nil, fromCM("a"))), "from-a"},
		{"the later envFrom wins", deployment(ctrl(nil, append(fromCM("a"), fromCM("b")...))), "from-b"},
		{"envFrom with a prefix", deployment(ctrl(nil, []corev1.EnvFromSource{{Prefix: "PFX_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "a"}}}})), ""},
		{"configMapKeyRef", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}, Key: "AWS_REGION"}}}}, nil)), "from-b"},
		{"a Secret is not read, and hides what it overrides", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", Value: "literal"}, {Name: "AWS_REGION", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "r"}}}}, fromCM("a"))), ""},
		{"a $(VAR) reference is not expanded", deployment(ctrl([]corev1.EnvVar{{Name: "AWS_REGION", Value: "$(REGION)"}}, fromCM("a"))), ""},
		{"a missing ConfigMap", deployment(ctrl(nil, fromCM("absent"))), ""},
		{"a sidecar's variable is not the controller's", deployment(sidecar, ctrl(nil, fromCM("a"))), "from-a"},
		{"unset", deployment(ctrl(nil, nil)), ""},
	} {
		if got := envOf(context.Background(), c, tc.d, "AWS_REGION"); got != tc.want {
			t.Errorf("%s: envOf = %q, want %q", tc.name, got, tc.want)
		}
	}
	// The prefixed key is found under its prefixed name.
	d := deployment(ctrl(nil, []corev1.EnvFromSource{{Prefix: "PFX_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "b"}}}}))
	if got := envOf(context.Background(), c, d, "PFX_AWS_REGION"); got != "from-b" {
		t.Errorf("PFX_AWS_REGION from a prefixed envFrom = %q, want from-b", got)
	}
}

// The hub Secret is the one mounted where --hub-kubeconfig points.
func TestHubSecretOf(t *testing.T) {
	secretVol := func(name, secret string, items ...corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret, Items: items}}}
	}
	with := func(path string, mounts []corev1.VolumeMount, vols ...corev1.Volume) *appsv1.Deployment {
		d := deployment(corev1.Container{Name: "controller", Args: []string{"--registry=hub", "--hub-kubeconfig=" + path}, VolumeMounts: mounts})
		d.Spec.Template.Spec.Volumes = vols
		return d
	}
	for _, tc := range []struct {
		name            string
		d               *appsv1.Deployment
		wantName, wantK string
	}{
		{"the chart's", with("/etc/clusterset/hub/kubeconfig", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/clusterset/hub"}}, secretVol("hub", "clusterset-hub-kubeconfig")), "clusterset-hub-kubeconfig", "kubeconfig"},
		{"a trailing slash", with("/etc/hub/config", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub/"}}, secretVol("hub", "creds")), "creds", "config"},
		{"the most specific mount", with("/etc/a/b/kubeconfig", []corev1.VolumeMount{{Name: "outer", MountPath: "/etc/a"}, {Name: "inner", MountPath: "/etc/a/b"}}, secretVol("outer", "wrong"), secretVol("inner", "right")), "right", "kubeconfig"},
		{"a subPath", with("/etc/hub.conf", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub.conf", SubPath: "kc"}}, secretVol("hub", "creds")), "creds", "kc"},
		{"items map a key to a path", with("/etc/hub/config", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub"}}, secretVol("hub", "creds", corev1.KeyToPath{Key: "kubeconfig", Path: "config"})), "creds", "kubeconfig"},
		{"a path items do not list", with("/etc/hub/other", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub"}}, secretVol("hub", "creds", corev1.KeyToPath{Key: "kubeconfig", Path: "config"})), "", ""},
		{"a projected Secret", with("/etc/hub/kubeconfig", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub"}},
			corev1.Volume{Name: "hub", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "projected"}}}}}}}), "projected", "kubeconfig"},
		{"not under any mount", with("/home/kubeconfig", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub"}}, secretVol("hub", "creds")), "", ""},
		{"a ConfigMap volume", with("/etc/hub/kubeconfig", []corev1.VolumeMount{{Name: "hub", MountPath: "/etc/hub"}},
			corev1.Volume{Name: "hub", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}), "", ""},
	} {
		name, key, ok := hubSecretOf(tc.d)
		if name != tc.wantName || key != tc.wantK || ok != (tc.wantName != "") {
			t.Errorf("%s: hubSecretOf = %q, %q, %v; want %q, %q", tc.name, name, key, ok, tc.wantName, tc.wantK)
		}
	}
}
