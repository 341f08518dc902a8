package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// DefaultTokenReloadInterval is how often a member reads its hub token file
// again (kubeconfig tokenFile, kept up to date by the kubelet from the
// Secret that `kubectl clusterset join` writes). It is read at once, too,
// after the hub refuses the token it holds.
const DefaultTokenReloadInterval = 10 * time.Second

// CredentialDigest identifies a bearer token without revealing it: the
// first 16 hex digits of its SHA-256. A member writes the digest of the
// token the hub last accepted into its heartbeat (Spec.Credential), so that
// `kubectl clusterset join` knows when the member uses a new token and the
// previous ones can be revoked.
func CredentialDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

// credential authenticates the requests of a hub client with the bearer
// token of its rest.Config and remembers the digest of the token that the
// hub last accepted.
type credential struct {
	accepted atomic.Pointer[string]
	// bearer is whether requests carry a bearer token at all.
	bearer bool
}

// unknown is whether requests carry a bearer token but none was accepted
// yet: a heartbeat written now would name no token.
func (c *credential) unknown() bool { return c.bearer && c.Accepted() == "" }

// Accepted is the CredentialDigest of the token of the last request the hub
// accepted (see observer), or "" when it accepted none yet or the client has
// no bearer token (client certificates, impersonation).
func (c *credential) Accepted() string {
	if p := c.accepted.Load(); p != nil {
		return *p
	}
	return ""
}

// withCredential returns a copy of cfg whose bearer token, when it has one,
// is added by a round tripper that lets c see which token each request
// carried. A token from a file (cfg.BearerTokenFile) is read again every
// reload and after a 401, so a rotated token is used without a restart.
func withCredential(cfg *rest.Config, reload time.Duration, c *credential) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	token, file := cfg.BearerToken, cfg.BearerTokenFile
	if token == "" && file == "" {
		return cfg
	}
	// client-go's own bearer round tripper sits outside WrapTransport's
	// inner round tripper, where the token cannot be seen; this one is the
	// only one that sets it.
	cfg.BearerToken, cfg.BearerTokenFile = "", ""
	c.bearer = true
	var wrap func(http.RoundTripper) http.RoundTripper
	if file != "" {
		// The resettable transport drops the cached token when the hub
		// answers 401, so the next request reads the file again.
		wrap = transport.ResettableTokenSourceWrapTransport(transport.NewCachedTokenSource(tokenFile{path: file, reload: reload}))
	} else {
		wrap = transport.TokenSourceWrapTransport(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}))
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return wrap(observer{next: rt, c: c})
	})
	return cfg
}

// tokenFile reads a bearer token from path, valid for reload.
type tokenFile struct {
	path   string
	reload time.Duration
}

// Token implements oauth2.TokenSource: the file's content without
// surrounding white space, valid for f.reload. It fails when the file cannot
// be read or is empty.
func (f tokenFile) Token() (*oauth2.Token, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("hub token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("hub token: %s is empty", f.path)
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer", Expiry: time.Now().Add(f.reload)}, nil
}

// observer records the token of every request that the hub answered with
// a status it gives only to an authenticated and authorized caller: 2xx, 404
// Not Found and 409 Conflict.
type observer struct {
	next http.RoundTripper
	c    *credential
}

func (o observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.next.RoundTrip(req)
	if err == nil && (resp.StatusCode >= 200 && resp.StatusCode < 300 || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict) {
		if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
			d := CredentialDigest(tok)
			if cur := o.c.accepted.Load(); cur == nil || *cur != d {
				o.c.accepted.Store(&d)
			}
		}
	}
	return resp, err
}
