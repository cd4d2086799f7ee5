package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestPlatformRoles(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    []string
		wantErr string
	}{
		{"ok/marked", "roles:\n  root:\n    level: 90\n    platform: true\n  admin:\n    level: 50\n    platform: false\n", []string{"root"}, ""},
		{"ok/none", "roles:\n  admin:\n    level: 50\n", []string{}, ""},
		{"fail/string", "roles:\n  admin:\n    level: 50\n    platform: \"yes\"\n", nil, "platform must be true or false"},
		{"fail/list", "roles:\n  admin:\n    level: 50\n    platform: [true]\n", nil, "platform must be true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(tt.src))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %v; want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := p.PlatformRoles(); !slices.Equal(got, tt.want) {
				t.Fatalf("PlatformRoles = %v, want %v", got, tt.want)
			}
		})
	}
	d := Default()
	if !d.IsPlatformRole("super_admin") || d.IsPlatformRole("admin") || d.IsPlatformRole("ghost") {
		t.Fatalf("default policy: super_admin must be the only platform role, got %v", d.PlatformRoles())
	}
	plat, other := d.SplitPlatform([]string{"admin", "super_admin", "user"})
	if !slices.Equal(plat, []string{"super_admin"}) || !slices.Equal(other, []string{"admin", "user"}) {
		t.Fatalf("SplitPlatform = %v, %v", plat, other)
	}
}
