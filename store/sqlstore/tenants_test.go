package sqlstore_test

import (
	"testing"

	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/storetest"
)

func TestTenantConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storetest.RunTenantTests(t, func(t *testing.T) *sqlstore.Store { return open(t, b.url(t)) })
		})
	}
}
