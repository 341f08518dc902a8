package integration

import (
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sd "github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/internal/testenv"
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
	kubeconfig := testenv.WriteKubeconfig(t, "cls1", map[string]*rest.Config{"cls1": cls1.cp.Config, "cls2": cls2.cp.Config})
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
		if err != nil || !regexp.MustCompile(`not read: read with this machine's AWS credentials \(region `+cloudmaptest.Region+`, the controller's AWS_REGION\): DiscoverInstances demo/nginx-hello`).MatchString(out) {
			t.Errorf("status with Cloud Map unreachable: %v, want the registry's problem:\n%s", err, out)
		}
	})

	t.Run("DoctorNoCredentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		out, err := run("doctor")
		if err != nil {
			t.Errorf("doctor failed when only this machine has no AWS credentials (a warning): %v\n%s", err, out)
		}
		if !regexp.MustCompile(`(?m)^WARN\s+cls1\s+registry\s+Cloud Map not read: no AWS credentials on this machine`).MatchString(out) {
			t.Errorf("doctor without AWS credentials does not say so:\n%s", out)
		}
	})

	t.Run("DoctorOtherRegion", func(t *testing.T) {
		// The controllers' region cannot be found, and this machine's is
		// one no member writes to: a warning that names the region read,
		// not "every member is silent".
		setRegion := func(region string) {
			for _, m := range members {
				cm := &corev1.ConfigMap{}
				if err := m.admin.Get(ctx, client.ObjectKey{Namespace: inspect.ControllerNamespace, Name: "clusterset-controller-cloudmap"}, cm); err != nil {
					t.Fatal(err)
				}
				cm.Data = map[string]string{"AWS_REGION": region}
				if region == "" {
					cm.Data = nil
				}
				if err := m.admin.Update(ctx, cm); err != nil {
					t.Fatal(err)
				}
			}
		}
		setRegion("")
		defer setRegion(cloudmaptest.Region)
		t.Setenv("AWS_REGION", "eu-north-1")
		out, err := run("doctor")
		if err != nil {
			t.Errorf("doctor reading a region without clusterset failed (a warning): %v\n%s", err, out)
		}
		for _, want := range []string{
			`(?m)^WARN\s+cls1\s+registry\s+Cloud Map not read: .*region eu-north-1, this machine's; the controller's AWS_REGION was not found.*no clusterset controller has written to this account and region`,
			`(?m)^WARN\s+-\s+heartbeat\s+not read: `,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("doctor's output does not match %s:\n%s", want, out)
			}
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

	// Hand-written instances of a cluster cls9 (as another writer could
	// leave): one endpoint that decodes, one whose address is not an IP.
	// status shows cls9's record with what decodes and says what was left
	// out.
	t.Run("StatusWithUndecodableInstance", func(t *testing.T) {
		c := sd.NewFromConfig(cloudmaptest.Config(), func(o *sd.Options) { o.BaseEndpoint = aws.String(endpoint) })
		var serviceID string
		p := sd.NewListServicesPaginator(c, &sd.ListServicesInput{})
		for p.HasMorePages() && serviceID == "" {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, svc := range page.Services {
				if aws.ToString(svc.Name) == "nginx-hello" {
					serviceID = aws.ToString(svc.Id)
				}
			}
		}
		if serviceID == "" {
			t.Fatal("no Cloud Map service nginx-hello")
		}
		inst := func(ip string) map[string]string {
			return map[string]string{"CLUSTERSET_ID": clusterSet, "CLUSTER_ID": "cls9", "AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080",
				"SERVICE_PORT": "80", "SERVICE_PROTOCOL": "TCP", "SERVICE_TYPE": "ClusterSetIP", "READY": "true"}
		}
		for id, attrs := range map[string]map[string]string{"tcp-10_19_0_1-8080": inst("10.19.0.1"), "bad-ip": inst("not-an-ip")} {
			if _, err := c.RegisterInstance(ctx, &sd.RegisterInstanceInput{ServiceId: aws.String(serviceID), InstanceId: aws.String(id), Attributes: attrs}); err != nil {
				t.Fatal(err)
			}
		}
		out, err := run("status", "nginx-hello", "-n", "demo")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{
			`(?m)^  cls9\s+ClusterSetIP\s+80/TCP\s+1/1\s+unknown$`,
			`(?m)^  cls9: read without what does not decode: instance bad-ip: .*not-an-ip`,
			`(?m)^  cls1\s+ClusterSetIP\s+http 80/TCP\s+2/2\s`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("status does not match %s:\n%s", want, out)
			}
		}
	})
}
