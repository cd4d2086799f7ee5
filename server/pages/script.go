package pages

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"strings"
)

// webauthnJS is the one script of the pages: it drives the WebAuthn prompt
// of the login page's second step and of /account/security (no build, no
// third-party code).
//
//go:embed assets/webauthn.js
var webauthnJS []byte

// webauthnScript is the script under a name holding its hash, so it may be
// cached for good.
var webauthnScript = func() struct {
	name string
	body []byte
} {
	sum := sha256.Sum256(webauthnJS)
	return struct {
		name string
		body []byte
	}{name: "webauthn." + hex.EncodeToString(sum[:6]) + ".js", body: webauthnJS}
}()

// ScriptPath is the path of the WebAuthn script.
func (p *Pages) ScriptPath() string { return p.base + AssetsPath + webauthnScript.name }

// widenCSP adds to a page's policy what one page needs beyond the strict
// one: script-src 'self' for the WebAuthn script (same-origin files only,
// never inline), and data: images for a TOTP enrolment's QR code. Only the
// pages showing them get them.
func widenCSP(csp string, script, dataImages bool) string {
	if script && !strings.Contains(csp, "script-src") {
		csp = strings.Replace(csp, "default-src 'none'; ", "default-src 'none'; script-src 'self'; ", 1)
	}
	if dataImages {
		csp = strings.Replace(csp, "img-src 'self'", "img-src 'self' data:", 1)
	}
	return csp
}
