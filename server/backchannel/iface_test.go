package backchannel_test

import (
	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/backchannel"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// What the lead wires together fits: the key manager signs, the store's
// queue (sqlstore.Store's) is a Queue, and the Notifier is signout.Ender's
// Backchannel.
var (
	_ backchannel.Signer     = (*keys.Manager)(nil)
	_ backchannel.Queue      = store.BackchannelQueue(nil)
	_ backchannel.Queue      = (*sqlstore.Store)(nil)
	_ signout.Backchannel    = (*backchannel.Notifier)(nil)
	_ backchannel.Queue      = (*memQueue)(nil)
	_ store.BackchannelQueue = (*memQueue)(nil)
)
