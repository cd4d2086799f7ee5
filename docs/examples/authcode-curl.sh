#!/usr/bin/env bash
# Browser sign-in (authorization code + PKCE) with nothing but curl: what a
# browser and an app do, step by step. It stops at the first unexpected
# answer (exit 1) and prints the token response at the end.
#
# Needs a running Portcullis, a user, and a client of the code flow, e.g.:
#   ./bin/portcullis clients create --id photos --name "Photo Album" \
#       --grants authorization_code,refresh_token --redirect-uri http://127.0.0.1:9999/callback
# Settings: ISSUER (http://127.0.0.1:8080), CLIENT_ID (photos), CLIENT_SECRET,
# REDIRECT_URI (http://127.0.0.1:9999/callback), EMAIL, PASSWORD.
set -euo pipefail

ISSUER=${ISSUER:-http://127.0.0.1:8080}
CLIENT_ID=${CLIENT_ID:-photos}
REDIRECT_URI=${REDIRECT_URI:-http://127.0.0.1:9999/callback}
: "${CLIENT_SECRET:?set CLIENT_SECRET}" "${EMAIL:?set EMAIL}" "${PASSWORD:?set PASSWORD}"

jar=$(mktemp); page=$(mktemp); trap 'rm -f "$jar" "$page"' EXIT
b64url() { base64 | tr '+/' '-_' | tr -d '=\n'; }
# field NAME: the value of the hidden form field NAME on the last page.
field() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" "$page" | head -1; }
fail() { echo "unexpected: $*" >&2; exit 1; }

# 1. The app makes a PKCE pair (RFC 7636), a state and a nonce, and sends the browser to the
#    authorization endpoint it found through discovery.
AUTHZ=$(curl -sf "$ISSUER/.well-known/openid-configuration" | sed -n 's/.*"authorization_endpoint":"\([^"]*\)".*/\1/p')
VERIFIER=$(head -c 32 /dev/urandom | b64url)
CHALLENGE=$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
STATE=$(head -c 16 /dev/urandom | b64url); NONCE=$(head -c 16 /dev/urandom | b64url)
code=$(curl -s -c "$jar" -b "$jar" -o "$page" -w '%{http_code}' -G "$AUTHZ" \
  --data-urlencode response_type=code --data-urlencode client_id="$CLIENT_ID" \
  --data-urlencode redirect_uri="$REDIRECT_URI" --data-urlencode "scope=openid email" \
  --data-urlencode state="$STATE" --data-urlencode nonce="$NONCE" \
  --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
[ "$code" = 200 ] && grep -q 'action="/login"' "$page" || fail "authorize: $code, no login form"
echo "1. authorize        -> 200 login page"

# 2. The person signs in on Portcullis's page (the form carries its CSRF token and the pending request).
#    A third-party client the person has not allowed yet gets the consent page; else the answer comes at once.
out=$(curl -s -c "$jar" -b "$jar" -o "$page" -w '%{http_code} %{redirect_url}' "$ISSUER/login" \
  -d csrf_token="$(field csrf_token)" -d request="$(field request)" \
  --data-urlencode username="$EMAIL" --data-urlencode password="$PASSWORD")
if [ "${out%% *}" = 200 ] && grep -q 'name="decision" value="allow"' "$page"; then
  echo "2. login            -> 200 consent page (a third-party client)"
  # 3. The person allows; Portcullis answers 303 to the redirect URI.
  location=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$ISSUER/consent" \
    -d csrf_token="$(field csrf_token)" -d request="$(field request)" -d decision=allow)
  echo "3. consent (allow)  -> 303 to the redirect URI"
elif [ "${out%% *}" = 303 ]; then
  location=${out#* }
  echo "2. login            -> 303 to the redirect URI (consent remembered, or a first-party client)"
else
  fail "login: $out"
fi
# The answer carries code, state (byte for byte) and iss (RFC 9207): the app checks both.
case "$location" in "$REDIRECT_URI?"*) ;; *) fail "answer redirected to '$location'" ;; esac
param() { printf %s "$location" | tr '?&' '\n\n' | sed -n "s/^$1=//p"; }
[ "$(param state)" = "$STATE" ] || fail "state $(param state), want $STATE"
[ "$(param iss)" = "$(printf %s "$ISSUER" | sed 's/:/%3A/g; s#/#%2F#g')" ] || fail "iss $(param iss)"
echo "   state and iss checked"

# 4. The app redeems the code with its PKCE verifier (once: a second redemption revokes the tokens).
resp=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" "$ISSUER/oauth2/token" -d grant_type=authorization_code \
  -d code="$(param code)" --data-urlencode redirect_uri="$REDIRECT_URI" -d code_verifier="$VERIFIER")
case "$resp" in *'"access_token"'*'"id_token"'*) ;; *) fail "token: $resp" ;; esac
echo "4. token            -> 200 access, refresh and id tokens"

# 5. Single sign-on: the same browser asks again and gets a code at once, without a page.
location=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' -G "$AUTHZ" \
  --data-urlencode response_type=code --data-urlencode client_id="$CLIENT_ID" \
  --data-urlencode redirect_uri="$REDIRECT_URI" --data-urlencode "scope=openid email" \
  --data-urlencode state=again --data-urlencode code_challenge="$CHALLENGE" --data-urlencode code_challenge_method=S256)
case "$location" in "$REDIRECT_URI?code="*) ;; *) fail "SSO: '$location'" ;; esac
echo "5. authorize again  -> 303 with a code, no login page (single sign-on)"
echo "$resp"
