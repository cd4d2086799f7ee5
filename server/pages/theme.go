package pages

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"strconv"
)

//go:embed assets/style.css
var baseCSS string

// DefaultBrandColor is used when the configured colour is not #rrggbb.
const DefaultBrandColor = "#1f4e79"

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

// theme is the stylesheet of the pages: the embedded CSS after custom
// properties derived from the brand colour.
type theme struct {
	css  []byte
	name string // file name under the assets path, with a content hash
}

// newTheme derives the colours from brand (validated again here: only
// #rrggbb ever reaches the stylesheet) so that text on the brand colour and
// the focus ring keep WCAG contrast whatever colour the operator picks.
func newTheme(brand string) theme {
	if !hexColor.MatchString(brand) {
		brand = DefaultBrandColor
	}
	white := [3]float64{1, 1, 1}
	ink := "#0b0c0c"
	c := rgb(brand)
	onBrand := "#ffffff"
	if contrast(c, white) < contrast(c, rgb(ink)) {
		onBrand = ink
	}
	focus := brand // the ring sits on white: at least 3:1 (WCAG 1.4.11)
	if contrast(c, white) < 3 {
		focus = ink
	}
	link := brand // link text on white: at least 4.5:1 (WCAG 1.4.3)
	if contrast(c, white) < 4.5 {
		link = ink
	}
	css := fmt.Sprintf(":root{--brand:%s;--on-brand:%s;--focus:%s;--link:%s}\n", brand, onBrand, focus, link) + baseCSS
	sum := sha256.Sum256([]byte(css))
	return theme{css: []byte(css), name: "style." + hex.EncodeToString(sum[:6]) + ".css"}
}

// rgb parses #rrggbb into linear-light components (sRGB transfer removed).
func rgb(hexc string) [3]float64 {
	var out [3]float64
	for i := range out {
		v, _ := strconv.ParseUint(hexc[1+2*i:3+2*i], 16, 8)
		s := float64(v) / 255
		if s <= 0.04045 {
			out[i] = s / 12.92
		} else {
			out[i] = math.Pow((s+0.055)/1.055, 2.4)
		}
	}
	return out
}

// luminance is the WCAG relative luminance.
func luminance(c [3]float64) float64 { return 0.2126*c[0] + 0.7152*c[1] + 0.0722*c[2] }

// contrast is the WCAG contrast ratio of two colours (1 to 21).
func contrast(a, b [3]float64) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}
