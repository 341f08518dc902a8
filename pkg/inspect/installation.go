package inspect

import (
	"cmp"
	"context"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterset/clusterset/pkg/membership"
)

// readRegistryAccess reads the controller's Deployment and, unless it
// uses Cloud Map, the member's hub credentials.
func readRegistryAccess(ctx context.Context, c client.Client, cfg *rest.Config, cl *Cluster, o ReadOptions) {
	readController(ctx, c, cl, o.ControllerNamespace)
	if d := cl.Controller; d != nil {
		cl.Registry = registryOf(d)
		if cl.Registry == "cloudmap" {
			cl.AWSRegion = envOf(ctx, c, d, "AWS_REGION")
			if cl.AWSRegion == "" {
				cl.AWSRegion = envOf(ctx, c, d, "AWS_DEFAULT_REGION")
			}
		}
	}
	if cl.Registry != "" && cl.Registry != "hub" {
		return
	}
	key := client.ObjectKey{Namespace: cl.ControllerNamespace, Name: membership.HubSecretName}
	dataKey := membership.HubSecretKey
	if cl.Controller != nil {
		if name, k, ok := hubSecretOf(cl.Controller); ok {
			key.Name, dataKey = name, k
		}
	}
	cl.HubSecret = key.String()
	var s corev1.Secret
	switch err := c.Get(ctx, key, &s); {
	case apierrors.IsNotFound(err):
		cl.HubProblem = "Secret " + key.String() + " does not exist"
	case err != nil:
		cl.HubProblem = "reading Secret " + key.String() + ": " + err.Error()
	default:
		hubCfg, err := membership.HubConfig(&s, dataKey)
		if err != nil {
			cl.HubProblem = "Secret " + key.String() + " holds no usable kubeconfig under " + dataKey + ": " + err.Error()
		} else {
			hubCfg.Timeout = cfg.Timeout
			cl.HubConfig = hubCfg
		}
	}
}

// readController finds the controller's Deployment: in namespace when it is
// set, else wherever one is labelled as the controller.
func readController(ctx context.Context, c client.Client, cl *Cluster, namespace string) {
	cl.ControllerNamespace = cmp.Or(namespace, ControllerNamespace)
	if namespace != "" {
		cl.ControllerSearch = namespace + "/" + ControllerName + " (--controller-namespace)"
	} else {
		var list appsv1.DeploymentList
		err := c.List(ctx, &list, client.MatchingLabels{ControllerLabel: ControllerName})
		if err == nil && len(list.Items) > 0 {
			// Running ones first, then the default namespace, then by
			// namespace and name.
			running := func(d *appsv1.Deployment) bool { return d.Spec.Replicas == nil || *d.Spec.Replicas > 0 }
			slices.SortFunc(list.Items, func(a, b appsv1.Deployment) int {
				return cmp.Or(-cmp.Compare(boolInt(running(&a)), boolInt(running(&b))),
					-cmp.Compare(boolInt(a.Namespace == ControllerNamespace), boolInt(b.Namespace == ControllerNamespace)),
					cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
			})
			cl.Controller = &list.Items[0]
			cl.ControllerNamespace = cl.Controller.Namespace
			for i := range list.Items[1:] {
				// One scaled to 0 writes nothing.
				if d := &list.Items[1+i]; running(d) {
					cl.OtherControllers = append(cl.OtherControllers, d.Namespace+"/"+d.Name)
				}
			}
			return
		}
		// None labelled, or Deployments may not be listed cluster-wide:
		// look where the default install puts it.
		cl.ControllerSearch = "one labelled " + ControllerLabel + "=" + ControllerName + " in every namespace, and " + ControllerNamespace + "/" + ControllerName
		if err != nil {
			cl.ControllerSearch = ControllerNamespace + "/" + ControllerName + " only (Deployments of every namespace could not be listed: " + err.Error() + ")"
		}
	}
	var d appsv1.Deployment
	switch err := c.Get(ctx, client.ObjectKey{Namespace: cl.ControllerNamespace, Name: ControllerName}, &d); {
	case err == nil:
		cl.Controller = &d
	case !apierrors.IsNotFound(err):
		cl.unchecked("controller", "reading Deployment "+cl.ControllerNamespace+"/"+ControllerName+": "+err.Error())
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// hubSecretOf finds the Secret and key the controller reads its hub
// kubeconfig from: the Secret (a secret volume, or a projected volume with
// one Secret) mounted where its --hub-kubeconfig points, through the most
// specific mount, a subPath and items mapping keys to paths.
func hubSecretOf(d *appsv1.Deployment) (name, key string, ok bool) {
	spec := d.Spec.Template.Spec
	c := controllerContainer(d)
	if c == nil {
		return "", "", false
	}
	path := flagOf(*c, "hub-kubeconfig")
	if path == "" {
		return "", "", false
	}
	var mount *corev1.VolumeMount
	var rel string
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		dir := strings.TrimSuffix(m.MountPath, "/")
		r, found := "", false
		switch {
		case m.SubPath != "" && path == dir:
			r, found = m.SubPath, true
		case m.SubPath == "":
			r, found = strings.CutPrefix(path, dir+"/")
		}
		if found && (mount == nil || len(dir) > len(strings.TrimSuffix(mount.MountPath, "/"))) {
			mount, rel = m, r
		}
	}
	if mount == nil {
		return "", "", false
	}
	// keyOf maps a path inside the volume back to the Secret's key.
	keyOf := func(items []corev1.KeyToPath) string {
		for _, it := range items {
			if it.Path == rel {
				return it.Key
			}
		}
		if len(items) > 0 {
			return "" // only the listed keys are there
		}
		return rel
	}
	for _, v := range spec.Volumes {
		if v.Name != mount.Name {
			continue
		}
		switch {
		case v.Secret != nil:
			if k := keyOf(v.Secret.Items); k != "" {
				return v.Secret.SecretName, k, true
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					if k := keyOf(src.Secret.Items); k != "" {
						return src.Secret.Name, k, true
					}
				}
			}
		}
	}
	return "", "", false
}

// controllerContainer is the container of d that runs clusterset-controller:
// the one given --registry, else the one named controller (the chart) or
// manager (config/), else the first.
func controllerContainer(d *appsv1.Deployment) *corev1.Container {
	cs := d.Spec.Template.Spec.Containers
	for i := range cs {
		if flagOf(cs[i], "registry") != "" {
			return &cs[i]
		}
	}
	for i := range cs {
		if cs[i].Name == "controller" || cs[i].Name == "manager" {
			return &cs[i]
		}
	}
	if len(cs) > 0 {
		return &cs[0]
	}
	return nil
}

// envOf is the value of the environment variable name of the controller's
// container, as the kubelet would set it: the last env entry of that name
// wins over envFrom, whose later sources win over earlier ones. A value from
// a Secret, the downward API or with a $(VAR) reference is not known here:
// "" then, as when nothing sets it or a ConfigMap cannot be read. Secrets of
// envFrom are not read.
func envOf(ctx context.Context, c client.Client, d *appsv1.Deployment, name string) string {
	ctr := controllerContainer(d)
	if ctr == nil {
		return ""
	}
	configMap := func(cmName string) map[string]string {
		var cm corev1.ConfigMap
		if c.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: cmName}, &cm) != nil {
			return nil
		}
		return cm.Data
	}
	for i := len(ctr.Env) - 1; i >= 0; i-- {
		e := ctr.Env[i]
		switch {
		case e.Name != name:
			continue
		case e.ValueFrom == nil && !strings.Contains(e.Value, "$("):
			return e.Value
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			return configMap(e.ValueFrom.ConfigMapKeyRef.Name)[e.ValueFrom.ConfigMapKeyRef.Key]
		}
		return ""
	}
	for i := len(ctr.EnvFrom) - 1; i >= 0; i-- {
		src := ctr.EnvFrom[i]
		key, ok := strings.CutPrefix(name, src.Prefix)
		if !ok || src.ConfigMapRef == nil {
			continue
		}
		if v, ok := configMap(src.ConfigMapRef.Name)[key]; ok {
			return v
		}
	}
	return ""
}

// registryOf is the --registry flag of the controller container ("hub" by
// default, as in the controller).
func registryOf(d *appsv1.Deployment) string {
	if c := controllerContainer(d); c != nil {
		return cmp.Or(flagOf(*c, "registry"), "hub")
	}
	return "hub"
}

// flagOf is the value of the flag name in c's command and args as Go's flag
// package reads it: "--name=v", "--name v", or with one dash; the last one
// wins. "" when it is not there.
func flagOf(c corev1.Container, name string) string {
	args := append(slices.Clone(c.Command), c.Args...)
	v := ""
	for i, a := range args {
		if a == "--" {
			break
		}
		f, ok := strings.CutPrefix(a, "--")
		if !ok {
			f, ok = strings.CutPrefix(a, "-")
		}
		if !ok {
			continue
		}
		if val, ok := strings.CutPrefix(f, name+"="); ok {
			v = val
		} else if f == name && i+1 < len(args) {
			v = args[i+1]
		}
	}
	return v
}
