#!/usr/bin/env bash
# A tour of the demo resource server (cmd/demo-api) with curl: which tokens it
# accepts, and the RFC 6750 answers it gives the others. It stops at the first
# answer that is not the expected one (exit 1).
#
# Needs, already running:
#   Portcullis with the demo policy:  PORTCULLIS_POLICY_FILE=docs/examples/demo-policy.yaml make run
#   the demo API:                      go run ./cmd/demo-api
# and the portcullis binary with the same settings as the server (for bootstrap
# and clients create): run this from the directory the server runs in.
#
# Settings: PORTCULLIS (binary, ./bin/portcullis), ISSUER (http://127.0.0.1:8080),
# API (http://127.0.0.1:8081), EMAIL and PASSWORD of the first super_admin.
set -euo pipefail

PORTCULLIS=${PORTCULLIS:-./bin/portcullis}
ISSUER=${ISSUER:-http://127.0.0.1:8080}
API=${API:-http://127.0.0.1:8081}
EMAIL=${EMAIL:-admin@example.com}
PASSWORD=${PASSWORD:-a-long-demo-passphrase}
CLIENT=demo-web

# json NAME: the string member NAME of the JSON object on stdin.
json() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

echo "$PASSWORD" | "$PORTCULLIS" bootstrap --email "$EMAIL" --password-stdin >/dev/null
"$PORTCULLIS" clients delete "$CLIENT" >/dev/null 2>&1 || true
SECRET=$("$PORTCULLIS" clients create --id "$CLIENT" --name "Demo web app" | json client_secret)

# token [SCOPE]: an access token of the super_admin, narrowed to SCOPE when given.
token() {
	curl -fsS -u "$CLIENT:$SECRET" -d grant_type=password --data-urlencode "username=$EMAIL" \
		--data-urlencode "password=$PASSWORD" ${1:+--data-urlencode "scope=$1"} "$ISSUER/oauth2/token" | json access_token
}

# expect STATUS METHOD PATH [TOKEN] [JSON BODY]: call the demo API, print the
# answer (status, WWW-Authenticate, body) and check the status.
expect() {
	local want=$1 method=$2 path=$3 tok=${4:-} body=${5:-} headers out status challenge
	headers=$(mktemp)
	local args=(-sS -X "$method" -D "$headers" -o /dev/stdout -w '\n%{http_code}')
	[ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
	out=$(curl "${args[@]}" "$API$path")
	status=${out##*$'\n'}
	out=${out%$'\n'*}
	challenge=$(sed -n 's/^[Ww][Ww][Ww]-[Aa][Uu][Tt][Hh][Ee][Nn][Tt][Ii][Cc][Aa][Tt][Ee]: *//p' "$headers" | tr -d '\r')
	printf '%-5s %-15s -> %s%s\n' "$method" "$path" "$status" "${challenge:+  WWW-Authenticate: $challenge}"
	printf '      %s\n' "${out%$'\n'}"
	rm -f "$headers"
	if [ "$status" != "$want" ]; then
		echo "expected $want" >&2
		exit 1
	fi
}

ALL=$(token)                     # every permission of super_admin
READ_ONLY=$(token projects:read) # the same user, narrowed to one permission
# Tampered: the read-only token's header and signature around the payload of ALL.
IFS=. read -r ro_header _ ro_signature <<<"$READ_ONLY"
IFS=. read -r _ all_payload _ <<<"$ALL"
TAMPERED="$ro_header.$all_payload.$ro_signature"

echo "# no token: 401 with a bare Bearer challenge"
expect 401 GET /me
echo "# a valid token: who it is for"
expect 200 GET /me "$ALL"
echo "# permissions: projects:read and projects:write"
expect 201 POST /projects "$ALL" '{"name":"Apollo"}'
expect 200 GET /projects "$READ_ONLY"
expect 403 POST /projects "$READ_ONLY" '{"name":"Gemini"}'
echo "# role admin or higher (super_admin is higher), signed in with a second factor: a password"
echo "# alone is 401 insufficient_user_authentication, acr_values=\"mfa\" (RFC 9470); enrol TOTP"
echo "# (POST /auth/mfa/totp) and sign in with the mfa-otp grant for a token it accepts"
expect 401 GET /admin/metrics "$ALL"
echo "# roles follow the grant: the read-only token names no role, so 403"
expect 403 GET /admin/metrics "$READ_ONLY"
echo "# a token whose permissions were widened: 401 invalid_token"
expect 401 GET /me "$TAMPERED"
echo "all answers as expected"
