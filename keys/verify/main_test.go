package verify_test

import (
	"testing"

	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }
