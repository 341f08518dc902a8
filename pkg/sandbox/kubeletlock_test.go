package sandbox

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestKubeletStartLockExcludes checks that a second holder of the kubelet
// start lock in the same process waits for the first, and gives up with the
// context's error when the context ends first.
func TestKubeletStartLockExcludes(t *testing.T) {
	was := kubeletStartLock
	kubeletStartLock = filepath.Join(t.TempDir(), "kubelet-start.lock")
	t.Cleanup(func() { kubeletStartLock = was })
	unlock, err := lockKubeletStart(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockKubeletStart(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while the first is held: err = %v, want %v", err, context.DeadlineExceeded)
	}
	got := make(chan error, 1)
	go func() {
		unlock2, err := lockKubeletStart(t.Context())
		if err == nil {
			unlock2()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second lock returned (%v) while the first is held", err)
	case <-time.After(300 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second lock after release: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second lock still waiting 5s after the first was released")
	}
}
