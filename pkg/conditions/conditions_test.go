package conditions

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cond(typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: typ + " says " + reason}
}

func TestSetReportsStatusOrReasonChanges(t *testing.T) {
	var conds []metav1.Condition
	if !Set(&conds, cond("Ready", metav1.ConditionFalse, "Pending")) {
		t.Error("a new condition is a change")
	}
	c := cond("Ready", metav1.ConditionFalse, "Pending")
	c.Message = "another message"
	if Set(&conds, c) {
		t.Error("a message-only change reported as a change")
	}
	if conds[0].Message != "another message" {
		t.Errorf("message not stored: %q", conds[0].Message)
	}
	if !Set(&conds, cond("Ready", metav1.ConditionFalse, "Failed")) {
		t.Error("a reason change not reported")
	}
	if !Set(&conds, cond("Ready", metav1.ConditionTrue, "Failed")) {
		t.Error("a status change not reported")
	}
	if len(conds) != 1 {
		t.Errorf("got %d conditions, want 1", len(conds))
	}
}

func TestJudgeExport(t *testing.T) {
	valid := cond("Valid", metav1.ConditionTrue, "Valid")
	ready := cond("Ready", metav1.ConditionTrue, "Exported")
	noConflict := cond("Conflict", metav1.ConditionFalse, "NoConflicts")
	for _, tc := range []struct {
		name       string
		conds      []metav1.Condition
		wantType   string
		wantReason string
	}{
		{"none", nil, "", "NoStatus"},
		{"only others", []metav1.Condition{cond("Other", metav1.ConditionFalse, "X")}, "", "NoStatus"},
		{"healthy", []metav1.Condition{noConflict, ready, valid}, "", ""},
		{"healthy without Valid or Conflict", []metav1.Condition{ready}, "", ""},
		{"invalid comes first", []metav1.Condition{cond("Valid", metav1.ConditionFalse, "NoService"), cond("Ready", metav1.ConditionFalse, "Pending")}, "Valid", "NoService"},
		{"not ready", []metav1.Condition{valid, cond("Ready", metav1.ConditionFalse, "Failed")}, "Ready", "Failed"},
		{"Ready missing", []metav1.Condition{valid}, "Ready", "NoReadyCondition"},
		{"conflict", []metav1.Condition{valid, ready, cond("Conflict", metav1.ConditionTrue, "PortConflict")}, "Conflict", "PortConflict"},
		{"unknown Ready", []metav1.Condition{valid, cond("Ready", metav1.ConditionUnknown, "Pending")}, "Ready", "Pending"},
		{"unknown Conflict is no known conflict", []metav1.Condition{valid, ready, cond("Conflict", metav1.ConditionUnknown, "Pending")}, "", ""},
		{"only Conflict: not reported yet", []metav1.Condition{noConflict}, "", "NoStatus"},
		{"only Valid: Ready missing", []metav1.Condition{valid, noConflict}, "Ready", "NoReadyCondition"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(tc.conds, Export, "export")
			if v.Type != tc.wantType || v.Reason != tc.wantReason || v.Healthy != (tc.wantReason == "") {
				t.Errorf("Judge = %+v, want type %q reason %q", v, tc.wantType, tc.wantReason)
			}
		})
	}
}

func TestSortedAndStatusOf(t *testing.T) {
	conds := []metav1.Condition{
		cond("Zeta", metav1.ConditionTrue, "Z"),
		cond("Conflict", metav1.ConditionFalse, "NoConflicts"),
		cond("Alpha", metav1.ConditionTrue, "A"),
		cond("Ready", metav1.ConditionTrue, "Exported"),
		cond("Valid", metav1.ConditionTrue, "Valid"),
	}
	var got []string
	for _, c := range Sorted(conds, Export) {
		got = append(got, c.Type)
	}
	want := []string{"Valid", "Ready", "Conflict", "Alpha", "Zeta"}
	if len(got) != len(want) {
		t.Fatalf("Sorted = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Sorted = %v, want %v", got, want)
		}
	}
	if conds[0].Type != "Zeta" {
		t.Error("Sorted changed its argument")
	}
	if s := StatusOf(conds, "Conflict"); s != "False" {
		t.Errorf("StatusOf(Conflict) = %q", s)
	}
	if s := StatusOf(conds, "Missing"); s != "-" {
		t.Errorf("StatusOf(Missing) = %q, want -", s)
	}
}
