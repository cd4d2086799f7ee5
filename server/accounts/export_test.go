package accounts

// Unexported helpers under test.
var (
	ParseInviteToken = parseInviteToken
	InviteToken      = inviteToken
	NewSecret        = newSecret
	ValidSecret      = validSecret
	NormaliseEmail   = normaliseEmail
	NormaliseName    = normaliseName
)
