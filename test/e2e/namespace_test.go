//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wt "github.com/clusterset/clusterset/test/e2e/walkthrough"
)

// testNamespaceDeleted deletes, with kube-controller-manager's namespace
// controller doing the work as in any cluster, the namespace of an exported
// service: first in the importer, where the import goes with the namespace
// (it is deleted entirely: nothing of clusterset holds it) and comes back
// when the namespace is created again (I1); then in the exporter, where the
// ServiceExport's finalizer withdraws the record before the namespace goes,
// so the import disappears everywhere (E5, I5). Nothing of another
// namespace is touched.
func testNamespaceDeleted(t *testing.T, env *wt.Env) {
	ctx := t.Context()
	const ns, name, replicas = "doomed", "doomed-web", 2
	if err := env.CreateNamespace(ctx, ns, env.Clusters()...); err != nil {
		t.Fatal(err)
	}
	if err := env.Create(ctx, wt.Exporter, wt.Deployment(ns, name, replicas), wt.ServiceObject(ns, name), wt.ServiceExport(ns, name)); err != nil {
		t.Fatal(err)
	}
	imported := func(cluster string) wt.Condition {
		return func(ctx context.Context) (bool, string, error) {
			imp, err := env.GetImport(ctx, cluster, ns, name)
			if err != nil {
				return false, "", err
			}
			ok, state := wt.ImportReady(imp, []string{wt.Exporter}, replicas)
			return ok, state, nil
		}
	}
	waitFor(t, wt.Importer+" to import "+ns+"/"+name, propagation, imported(wt.Importer))

	deleteNamespace(t, env, wt.Importer, ns)
	waitFor(t, "namespace "+ns+" to be deleted entirely in "+wt.Importer, propagation, namespaceGone(env, wt.Importer, ns))
	// No Event can be created in a terminating namespace: the log says it.
	waitFor(t, wt.Importer+"'s controller to log that the import goes with its namespace", 30*time.Second,
		controllerLogHas(env, wt.Importer, "the namespace is being deleted", `"namespace":"`+ns+`"`, `"service":"`+name+`"`))
	if err := env.CreateNamespace(ctx, ns, wt.Importer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "I1 "+wt.Importer+" to import "+ns+"/"+name+" again in the new namespace", propagation, imported(wt.Importer))

	deleteNamespace(t, env, wt.Exporter, ns)
	waitFor(t, "namespace "+ns+" to be deleted entirely in "+wt.Exporter+" (the ServiceExport's finalizer released)", propagation, namespaceGone(env, wt.Exporter, ns))
	waitFor(t, wt.Exporter+"'s controller to log the withdrawal", 30*time.Second,
		controllerLogHas(env, wt.Exporter, "withdrew record", `"namespace":"`+ns+`"`, `"service":"`+name+`"`))
	waitFor(t, "E5/I5 "+ns+"/"+name+" to disappear from "+wt.Importer, propagation, func(ctx context.Context) (bool, string, error) {
		imp, err := env.GetImport(ctx, wt.Importer, ns, name)
		if err != nil {
			return false, "", err
		}
		if imp.Exists() {
			return false, fmt.Sprintf("%s: import still there (ServiceImport %t, derived Service %t, %d slices)", wt.Importer, imp.ServiceImport != nil, imp.Derived != nil, len(imp.Slices)), nil
		}
		return true, wt.Importer + ": nothing of the import left", nil
	})
	waitFor(t, "the walkthrough's service, in another namespace, to stay imported everywhere", propagation,
		importedEverywhere(env, wt.Service, []string{wt.Exporter}, wt.Replicas))
}

func deleteNamespace(t *testing.T, env *wt.Env, cluster, ns string) {
	t.Helper()
	if err := env.Client(cluster).Delete(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatalf("%s: deleting namespace %s: %v", cluster, ns, err)
	}
}

// namespaceGone holds once the namespace no longer exists; until then it
// reports its phase and the namespace controller's conditions.
func namespaceGone(env *wt.Env, cluster, name string) wt.Condition {
	return func(ctx context.Context) (bool, string, error) {
		var ns corev1.Namespace
		err := env.Client(cluster).Get(ctx, client.ObjectKey{Name: name}, &ns)
		if apierrors.IsNotFound(err) {
			return true, cluster + ": namespace " + name + " deleted", nil
		}
		if err != nil {
			return false, "", err
		}
		state := fmt.Sprintf("%s: namespace %s is %s", cluster, name, ns.Status.Phase)
		for _, c := range ns.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				state += fmt.Sprintf("; %s: %s", c.Type, c.Message)
			}
		}
		return false, state, nil
	}
}

// controllerLogHas holds once a line of cluster's clusterset-controller log
// (the sandbox's process log, or its pods' logs on a real node) contains
// every one of parts.
func controllerLogHas(env *wt.Env, cluster string, parts ...string) wt.Condition {
	return func(context.Context) (bool, string, error) {
		for _, f := range env.Sandbox.ControllerLogs() {
			if !strings.HasPrefix(filepath.Base(f), cluster+"-") && !strings.Contains(f, "/"+cluster+"/") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return false, "", err
			}
			for _, line := range strings.Split(string(data), "\n") {
				missing := false
				for _, p := range parts {
					missing = missing || !strings.Contains(line, p)
				}
				if !missing {
					return true, "logged: " + line, nil
				}
			}
		}
		return false, fmt.Sprintf("no line of %s's controller log has all of %q", cluster, parts), nil
	}
}
