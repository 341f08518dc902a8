// Package conditions is the one place that knows which conditions clusterset
// sets on ServiceExports, what each one's healthy status is, and how a
// condition is set and compared. The export and import controllers set
// conditions through Set; the CLI and the walkthrough read them through
// Export, Sorted and Judge, so a new ServiceExport condition is declared here
// once and every reader shows and judges it.
package conditions

import (
	"cmp"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Kind describes one condition type as readers judge it.
type Kind struct {
	// Type is the condition's type, e.g. "Ready".
	Type string
	// Healthy are the statuses that need no attention: True for Valid and
	// Ready; False or Unknown for Conflict (only a known conflict needs
	// attention).
	Healthy []metav1.ConditionStatus
	// Required conditions are always set once the controller has looked at
	// the object; their absence needs attention.
	Required bool
	// Reported conditions are the ones the controller sets on every object
	// it looks at: when none is present, it has not reported at all.
	Reported bool
}

// Export lists the ServiceExport conditions clusterset sets, in the order
// KEP-1645 explains them and readers show them: Valid (the Service can be
// exported), Ready (the record is in the registry), Conflict (the clusters'
// exports disagree). Readers judge an export by the first one in this order
// that is not Healthy.
var Export = []Kind{
	{Type: string(mcsv1beta1.ServiceExportConditionValid), Healthy: []metav1.ConditionStatus{metav1.ConditionTrue}, Reported: true},
	{Type: string(mcsv1beta1.ServiceExportConditionReady), Healthy: []metav1.ConditionStatus{metav1.ConditionTrue}, Required: true, Reported: true},
	{Type: string(mcsv1beta1.ServiceExportConditionConflict), Healthy: []metav1.ConditionStatus{metav1.ConditionFalse, metav1.ConditionUnknown}},
}

// Set sets c in conds the way meta.SetStatusCondition does (the transition
// time moves only when the status changes) and reports whether the status or
// the reason changed: what deserves an event. A message-only change is
// stored but reports false.
func Set(conds *[]metav1.Condition, c metav1.Condition) bool {
	old := meta.FindStatusCondition(*conds, c.Type)
	changed := old == nil || old.Status != c.Status || old.Reason != c.Reason
	meta.SetStatusCondition(conds, c)
	return changed
}

// StatusOf returns the status of the condition typ in conds, "-" when it is
// absent: how tables print it.
func StatusOf(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return string(c.Status)
	}
	return "-"
}

// Sorted returns a copy of conds in the order of kinds, then any other
// condition by type.
func Sorted(conds []metav1.Condition, kinds []Kind) []metav1.Condition {
	rank := func(typ string) int {
		if i := slices.IndexFunc(kinds, func(k Kind) bool { return k.Type == typ }); i >= 0 {
			return i
		}
		return len(kinds)
	}
	out := slices.Clone(conds)
	slices.SortStableFunc(out, func(a, b metav1.Condition) int {
		return cmp.Or(cmp.Compare(rank(a.Type), rank(b.Type)), cmp.Compare(a.Type, b.Type))
	})
	return out
}

// Verdict is how a reader judges an object by its conditions.
type Verdict struct {
	// Healthy is true when no condition of the kinds needs attention.
	Healthy bool
	// Type, Reason and Message are those of the first condition that needs
	// attention. Reason is "NoStatus" when no Reported kind is set, and
	// "No<Type>Condition" when a required one is missing.
	Type, Reason, Message string
}

// Judge returns the first condition of conds, in the order of kinds, whose
// status is not one of its kind's Healthy ones, or a missing required
// condition; "NoStatus" when no Reported kind is present.
// noun names the object in messages ("export").
func Judge(conds []metav1.Condition, kinds []Kind, noun string) Verdict {
	if !slices.ContainsFunc(kinds, func(k Kind) bool { return k.Reported && meta.FindStatusCondition(conds, k.Type) != nil }) {
		return Verdict{Reason: "NoStatus", Message: "the controller has not reported on this " + noun}
	}
	for _, k := range kinds {
		c := meta.FindStatusCondition(conds, k.Type)
		switch {
		case c == nil && k.Required:
			return Verdict{Type: k.Type, Reason: "No" + k.Type + "Condition", Message: "the " + noun + " has no " + k.Type + " condition yet"}
		case c != nil && !slices.Contains(k.Healthy, c.Status):
			return Verdict{Type: k.Type, Reason: c.Reason, Message: c.Message}
		}
	}
	return Verdict{Healthy: true}
}
