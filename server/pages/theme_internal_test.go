package pages

import (
	"fmt"
	"strings"
	"testing"
)

// TestTheme: text on the brand colour, the focus ring and links keep their
// WCAG contrast whatever the brand colour; anything but #rrggbb never reaches
// the stylesheet.
func TestTheme(t *testing.T) {
	for _, tc := range []struct {
		name, brand, want string
	}{
		{"ok/default", "#1f4e79", ":root{--brand:#1f4e79;--on-brand:#ffffff;--focus:#1f4e79;--link:#1f4e79}"},
		{"ok/light_brand_dark_text", "#ffd700", ":root{--brand:#ffd700;--on-brand:#0b0c0c;--focus:#0b0c0c;--link:#0b0c0c}"},
		{"ok/white", "#ffffff", ":root{--brand:#ffffff;--on-brand:#0b0c0c;--focus:#0b0c0c;--link:#0b0c0c}"},
		// #2e8540 is 4.5:1 on white: white text, and fine as a link and a ring.
		{"ok/mid_green", "#2e8540", ":root{--brand:#2e8540;--on-brand:#ffffff;--focus:#2e8540;--link:#2e8540}"},
		// #3d8fd1 is between 3:1 and 4.5:1 on white: a ring, not link text.
		{"ok/mid_blue", "#3d8fd1", ":root{--brand:#3d8fd1;--on-brand:#0b0c0c;--focus:#3d8fd1;--link:#0b0c0c}"},
		{"ok/upper_case", "#1F4E79", ":root{--brand:#1F4E79;--on-brand:#ffffff;--focus:#1F4E79;--link:#1F4E79}"},
		{"fail/css_injection", "red;}body{display:none", ":root{--brand:" + DefaultBrandColor + ";"},
		{"fail/short", "#fff", ":root{--brand:" + DefaultBrandColor + ";"},
		{"fail/empty", "", ":root{--brand:" + DefaultBrandColor + ";"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newTheme(tc.brand)
			if !strings.HasPrefix(string(th.css), tc.want) {
				t.Fatalf("stylesheet starts %q, want %q", string(th.css)[:100], tc.want)
			}
			if !strings.HasPrefix(th.name, "style.") || !strings.HasSuffix(th.name, ".css") || len(th.name) != len("style.")+12+len(".css") {
				t.Fatalf("asset name %q", th.name)
			}
		})
	}
	if newTheme("#000000").name == newTheme("#ffffff").name {
		t.Fatal("the stylesheet name does not change with its content")
	}
}

// TestContrast pins the WCAG contrast formula on known pairs.
func TestContrast(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		min, max   float64
	}{
		{"ok/black_white", "#000000", "#ffffff", 20.99, 21.01},
		{"ok/same", "#777777", "#777777", 1, 1.0001},
		{"ok/grey_on_white", "#767676", "#ffffff", 4.5, 4.6}, // the classic AA-passing grey
		{"ok/symmetric", "#ffffff", "#767676", 4.5, 4.6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c := contrast(rgb(tc.a), rgb(tc.b)); c < tc.min || c > tc.max {
				t.Fatalf("contrast %s/%s = %.3f, want %.2f–%.2f", tc.a, tc.b, c, tc.min, tc.max)
			}
		})
	}
}

// TestContrastOfTwoStepPages: the fixed colours the two-step verification
// pages add keep WCAG AA (4.5:1) for their text: the "On" tag, the TOTP key
// on its grey box, a hint (the passkey prompt's status) on the card.
func TestContrastOfTwoStepPages(t *testing.T) {
	for _, tc := range []struct {
		name, rule, fg, bg string
	}{
		{"on_tag", ".tag-on {\n  background: #00703c;\n  color: #ffffff;", "#ffffff", "#00703c"},
		{"secret_key", "code.secret {\n  display: block;\n  margin-top: 0.5rem;\n  padding: 0.5rem 0.75rem;\n  background: #f3f4f6;", "#0b0c0c", "#f3f4f6"},
		{"hint_on_card", ".hint {\n  color: #505a5f;", "#505a5f", "#ffffff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(baseCSS, tc.rule) {
				t.Fatalf("the stylesheet no longer has %q: update this test with the new colours", tc.rule)
			}
			if c := contrast(rgb(tc.fg), rgb(tc.bg)); c < 4.5 {
				t.Fatalf("%s on %s: %.2f:1, want at least 4.5:1", tc.fg, tc.bg, c)
			}
		})
	}
}

// TestContrastOfConsole: the colours the admin console adds to the
// stylesheet keep WCAG AA (4.5:1) for text, and the focus ring in the
// masthead is drawn in the colour chosen against the brand colour, for
// every brand colour the theme derives.
func TestContrastOfConsole(t *testing.T) {
	for _, tc := range []struct {
		name, rule, fg, bg string
	}{
		{"warning_button", ".button-warning {\n  color: #ffffff;\n  background: #b3261e;", "#ffffff", "#b3261e"},
		{"current_screen", ".console-nav a[aria-current=\"page\"] {\n  color: #0b0c0c;", "#0b0c0c", "#ffffff"},
		{"skip_link", ".skip-link {\n  position: absolute;\n  left: 0.5rem;\n  top: -4rem;\n  padding: 0.5rem 0.75rem;\n  background: #ffffff;\n  color: #0b0c0c;", "#0b0c0c", "#ffffff"},
		{"secret_box", ".secret-box {\n  border: 3px solid #0b0c0c;\n  border-radius: 0.25rem;\n  padding: 0.75rem 1.25rem;\n  margin: 0 0 1.5rem;\n  background: #f3f4f6;", "#0b0c0c", "#f3f4f6"},
		{"hint_on_main", ".console-main {\n  margin: 0 auto;\n  padding: 1.5rem 1.25rem 3rem;\n  background: #ffffff;", "#505a5f", "#ffffff"},
	} {
		t.Run("ok/"+tc.name, func(t *testing.T) {
			if !strings.Contains(baseCSS, tc.rule) {
				t.Fatalf("the stylesheet no longer has %q: update this test with the new colours", tc.rule)
			}
			if c := contrast(rgb(tc.fg), rgb(tc.bg)); c < 4.5 {
				t.Fatalf("%s on %s: %.2f:1, want at least 4.5:1", tc.fg, tc.bg, c)
			}
		})
	}
	if !strings.Contains(baseCSS, ".console-masthead .button:focus-visible {\n  outline-color: var(--on-brand);") {
		t.Fatal("the masthead's focus ring must use --on-brand")
	}
	for _, brand := range []string{DefaultBrandColor, "#ffffff", "#ffcc00", "#000000", "#00703c"} {
		th := newTheme(brand)
		var onBrand string
		if _, err := fmt.Sscanf(strings.SplitN(string(th.css), "--on-brand:", 2)[1], "%7s", &onBrand); err != nil {
			t.Fatal(err)
		}
		if c := contrast(rgb(onBrand), rgb(brand)); c < 3 {
			t.Errorf("brand %s: the masthead focus ring %s has %.2f:1, want at least 3:1 (WCAG 1.4.11)", brand, onBrand, c)
		}
	}
}
