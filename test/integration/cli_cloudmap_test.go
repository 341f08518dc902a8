package integration

import (
	"errors"
	"regexp"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterset/clusterset/pkg/cli"
	"github.com/clusterset/clusterset/pkg/controllers/registrylink"
	"github.com/clusterset/clusterset/pkg/inspect"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap"
	"github.com/clusterset/clusterset/pkg/registry/cloudmap/cloudmaptest"
)

// TestCLICloudMap runs `kubectl clusterset status SERVICE` and `doctor` on a
// clusterset whose registry is Cloud Map (moto): the CLI reads the records
// and heartbeats with this machine's AWS credentials (the AWS_* variables
// here), in the region it finds in the controller's Deployment (AWS_REGION
// from the ConfigMap of its envFrom, as config/overlays/cloudmap sets it).
// Output is compared with testdata/cli/*-cloudmap.golden.
func TestCLICloudMap(t *testing.T) {
	endpoint := cloudmaptest.StartMoto(t)
	members := startCloudMapMembersWith(t, endpoint,
		registrylink.Options{HeartbeatInterval: 500 * time.Millisecond, GracePeriod: time.Minute},
		func(o *cloudmap.Options) { o.LeaseDuration = cliLease })
	cls1, cls2 := members[0], members[1]
	for _, m := range members {
		mustCreate(t, m.admin, namespace("demo"), namespace(inspect.ControllerNamespace), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: inspect.ControllerNamespace, Name: "clusterset-controller-cloudmap"},
			Data:       map[string]string{"AWS_REGION": cloudmaptest.Region},
		})
		installAround(t, m, func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Args = []string{"--registry=cloudmap", "--leader-elect"}
			c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "clusterset-controller-cloudmap"}}}}
		})
	}
	// This machine's AWS configuration: moto, test credentials, no region
	// (the controller's is used), nothing from ~/.aws or the instance
	// metadata service.
	t.Setenv("AWS_ENDPOINT_URL", endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	kubeconfig := writeKubeconfig(t, map[string]*rest.Config{"cls1": cls1.cp.Config, "cls2": cls2.cp.Config})
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(kubeconfig, append(args, "--contexts", "cls1,cls2")...)
	}

	mustCreate(t, cls1.admin,
		service("demo", "nginx-hello", tcpPort("http", 80)),
		endpointSlice("demo", "nginx-hello", "nginx-hello-1", discoveryv1.AddressTypeIPv4, 8080, true, "10.11.0.1", "10.11.0.2"),
		serviceExport("demo", "nginx-hello"))
	mustCreate(t, cls2.admin,
		service("demo", "nginx-hello", tcpPort("http", 80)),
		endpointSlice("demo", "nginx-hello", "nginx-hello-1", discoveryv1.AddressTypeIPv4, 8080, false, "10.12.0.1"),
		serviceExport("demo", "nginx-hello"))
	eventually(t, wait, "both clusters' endpoints imported in both", func() error {
		for _, m := range members {
			sl, err := importedSlices(m.admin, "demo", "nginx-hello")
			if err != nil {
				return err
			}
			if got, want := addressesOf(append(sl["cls1"], sl["cls2"]...)), "10.11.0.1 10.11.0.2 10.12.0.1!"; got != want {
				return errors.New(m.name + " imports " + got + ", want " + want)
			}
		}
		return nil
	})

	t.Run("StatusService", func(t *testing.T) {
		out, err := run("status", "nginx-hello", "-n", "demo")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		compareGolden(t, "status-nginx-hello-cloudmap", out)
	})

	t.Run("DoctorHealthy", func(t *testing.T) {
		out, err := run("doctor")
		if err != nil {
			t.Errorf("doctor on a healthy Cloud Map clusterset: %v", err)
		}
		compareGolden(t, "doctor-healthy-cloudmap", out)
	})

	t.Run("DoctorCloudMapUnreachable", func(t *testing.T) {
		t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
		out, err := run("doctor")
		if err != nil {
			t.Errorf("doctor failed when only this machine cannot reach Cloud Map (a warning): %v\n%s", err, out)
		}
		for _, want := range []string{
			`(?m)^WARN\s+cls1\s+registry\s+Cloud Map cannot be reached from this machine`,
			`(?m)^WARN\s+-\s+heartbeat\s+not read: the registry cannot be reached`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("doctor's output does not match %s:\n%s", want, out)
			}
		}
		out, err = run("status", "nginx-hello", "-n", "demo")
		if err != nil || !regexp.MustCompile(`not read: read with this machine's AWS credentials \(region `+cloudmaptest.Region+`\): DiscoverInstances demo/nginx-hello`).MatchString(out) {
			t.Errorf("status with Cloud Map unreachable: %v, want the registry's problem:\n%s", err, out)
		}
	})

	t.Run("DoctorSilentMember", func(t *testing.T) {
		cls2.stopController()
		time.Sleep(cliLease + time.Second)
		out, err := run("doctor")
		var exit cli.ExitError
		if !errors.As(err, &exit) || exit != 1 {
			t.Errorf("doctor with a silent member: err %v, want exit status 1", err)
		}
		compareGolden(t, "doctor-silent-member-cloudmap", out)
	})
}
