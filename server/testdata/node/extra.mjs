// Drives the less travelled paths of a running Portcullis with panva's
// openid-client and jose, as a Node web app would: a pushed authorization
// request (RFC 9126) and the authorization URL openid-client builds from it;
// a refresh with the TokenSet (openid-client then checks the new id token's
// sub against the old one); jose verifying an RFC 9068 access token (typ
// at+jwt and its required claims); the introspection and revocation helpers
// on refresh and access tokens; the errors openid-client parses from
// /userinfo (RFC 6750 §3) and from the token endpoint; error answers at the
// callback (access_denied, login_required, with iss and state checked);
// RP-initiated logout through endSessionUrl; and jose verifying the
// back-channel logout token (typ logout+jwt).
//
// The back-channel receiver listens on the socket the test passes as file
// descriptor 3 (its address is the client's backchannel_logout_uri).
// Usage: node extra.mjs ISSUER CLIENT_ID SECRET REDIRECT_URI POST_LOGOUT_URI USERNAME PASSWORD ALG
import http from 'node:http';
import { Issuer, generators } from 'openid-client';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { browser } from './browser.mjs';

const [issuerURL, clientID, clientSecret, redirectURI, postLogoutURI, username, password, alg] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
// refusal runs fn, which must throw; check tells whether the error is the
// expected one.
const refusal = async (what, fn, check) => {
  let err;
  try { await fn(); } catch (e) { err = e; }
  if (!err) fail(what + ': accepted');
  if (!check(err)) fail(`${what}: ${err.name} ${err.error ?? ''} ${err.message} status=${err.response?.statusCode}`);
  return err;
};

// The back-channel receiver: the first logout token it is sent.
let gotLogoutToken;
const logoutToken = new Promise((resolve) => { gotLogoutToken = resolve; });
const receiver = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => { res.writeHead(200, { 'cache-control': 'no-store' }); res.end(); gotLogoutToken(new URLSearchParams(body).get('logout_token')); });
});
await new Promise((resolve) => receiver.listen({ fd: 3 }, resolve));

const issuer = await Issuer.discover(issuerURL);
if (!issuer.metadata.pushed_authorization_request_endpoint) fail('discovery has no PAR endpoint');
if (!issuer.metadata.end_session_endpoint) fail('discovery has no end_session_endpoint');
if (issuer.metadata.backchannel_logout_supported !== true) fail('discovery does not advertise back-channel logout');
const client = new issuer.Client({ client_id: clientID, client_secret: clientSecret, redirect_uris: [redirectURI],
  post_logout_redirect_uris: [postLogoutURI], response_types: ['code'], id_token_signed_response_alg: alg,
  token_endpoint_auth_method: 'client_secret_basic' });
const jwks = createRemoteJWKSet(new URL(issuer.metadata.jwks_uri));

// A browser: a cookie jar over fetch, redirects followed by hand (browser.mjs).
const { jar, request, submit, follow } = browser(issuerURL, redirectURI, fail);

const isLogin = (page) => page.status === 200 && page.body.includes('name="username"');
const isConsent = (page) => page.status === 200 && page.body.includes('value="allow"');

// 1. A pushed authorization request, then the authorization URL built from
// its request_uri; the login and consent pages; the callback validated.
const checks = { code_verifier: generators.codeVerifier(), state: generators.state(), nonce: generators.nonce() };
const par = await client.pushedAuthorizationRequest({ scope: 'openid email offline_access',
  code_challenge: generators.codeChallenge(checks.code_verifier), code_challenge_method: 'S256', state: checks.state, nonce: checks.nonce });
if (!par.request_uri?.startsWith('urn:ietf:params:oauth:request_uri:') || !(par.expires_in > 0)) fail('PAR answer ' + JSON.stringify(par));
let page = await follow(await request(client.authorizationUrl({ request_uri: par.request_uri })));
if (!isLogin(page)) fail(`login page: ${page.status} ${page.body?.slice(0, 300)}`);
page = await follow(await submit(page, { username, password }));
if (!isConsent(page)) fail(`consent page: ${page.status} ${page.body?.slice(0, 300)}`);
page = await follow(await submit(page, { decision: 'allow' }));
if (!page.callback) fail(`no redirect to the client: ${page.status} ${page.body?.slice(0, 300)}`);
const tokens = await client.callback(redirectURI, client.callbackParams(page.callback), checks);
const claims = tokens.claims();
if (claims.nonce !== checks.nonce || !claims.sid || !claims.auth_time || claims.email !== username || !tokens.refresh_token) {
  fail('PAR sign-in: ' + JSON.stringify(claims));
}
if (decodeProtectedHeader(tokens.id_token).alg !== alg) fail('id token alg ' + decodeProtectedHeader(tokens.id_token).alg);

// 2. A refresh with the TokenSet: openid-client checks the new id token's
// sub against the old; the sign-in (sid, auth_time) is the same.
const refreshed = await client.refresh(tokens);
const again = refreshed.claims();
if (again.sub !== claims.sub || again.sid !== claims.sid || again.auth_time !== claims.auth_time || again.iss !== issuerURL ||
  !again.at_hash) fail('refreshed id token ' + JSON.stringify(again));
if (refreshed.refresh_token === tokens.refresh_token) fail('refresh token not rotated');

// 3. jose: an RFC 9068 access token, its typ and required claims.
const at = await jwtVerify(refreshed.access_token, jwks, { issuer: issuerURL, audience: 'api', typ: 'at+jwt',
  requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'] });
if (at.protectedHeader.typ !== 'at+jwt' || at.payload.client_id !== clientID || at.payload.sub !== claims.sub) {
  fail('access token ' + JSON.stringify(at));
}

// 4. Introspection of both kinds of token, with the token_type_hint.
// (Not the refresh token's scope: that is another test's business.)
const rt = await client.introspect(refreshed.refresh_token, 'refresh_token');
if (rt.active !== true || rt.client_id !== clientID || rt.sub !== claims.sub) fail('introspected refresh token ' + JSON.stringify(rt));
const live = await client.introspect(refreshed.access_token, 'access_token');
if (live.active !== true || live.client_id !== clientID || live.sub !== claims.sub || live.jti !== at.payload.jti) {
  fail('introspected access token ' + JSON.stringify(live));
}

// 5. Errors as openid-client parses them: a bad bearer token at /userinfo
// (401 with the RFC 6750 challenge), a wrong client secret at the token
// endpoint (401 invalid_client).
await refusal('userinfo with a bad token', () => client.userinfo('x.y.z'), (e) => e.name === 'OPError' &&
  e.error === 'invalid_token' && e.response?.statusCode === 401 && /^Bearer /.test(e.response.headers['www-authenticate'] ?? ''));
const wrong = new issuer.Client({ client_id: clientID, client_secret: 'not the secret', token_endpoint_auth_method: 'client_secret_basic' });
await refusal('refresh with a wrong secret', () => wrong.refresh(refreshed.refresh_token), (e) => e.name === 'OPError' &&
  e.error === 'invalid_client' && e.response?.statusCode === 401);

// 6. Error answers at the callback, validated by openid-client (state, iss):
// consent denied, then prompt=none without a session.
const errorCallback = async (what, prompt, signIn, want) => {
  const c = { code_verifier: generators.codeVerifier(), state: generators.state(), nonce: generators.nonce() };
  let p = await follow(await request(client.authorizationUrl({ scope: 'openid', code_challenge: generators.codeChallenge(c.code_verifier),
    code_challenge_method: 'S256', state: c.state, nonce: c.nonce, prompt })));
  if (!p.callback) p = await signIn(p);
  if (!p.callback) fail(`${what}: no redirect to the client: ${p.status} ${p.body?.slice(0, 300)}`);
  const params = client.callbackParams(p.callback);
  if (params.iss !== issuerURL || params.state !== c.state) fail(`${what}: callback ${p.callback}`);
  await refusal(what, () => client.callback(redirectURI, params, c), (e) => e.name === 'OPError' && e.error === want);
};
await errorCallback('consent denied', 'consent', async (p) => {
  if (!isConsent(p)) fail(`consent page: ${p.status} ${p.body?.slice(0, 300)}`);
  return follow(await submit(p, { decision: 'deny' }));
}, 'access_denied');

// 7. RP-initiated logout with the URL openid-client builds (id_token_hint,
// post_logout_redirect_uri, state), then the back-channel logout token,
// verified by jose: typ logout+jwt, the event, sid and sub, no nonce.
const bye = await follow(await request(client.endSessionUrl({ id_token_hint: refreshed, state: 'bye' })), postLogoutURI);
if (!bye.callback) fail(`logout: no redirect to the client: ${bye.status} ${bye.body?.slice(0, 300)}`);
if (new URL(bye.callback).searchParams.get('state') !== 'bye') fail('logout state ' + bye.callback);
const lt = await Promise.race([logoutToken, new Promise((resolve) => setTimeout(resolve, 10000, undefined).unref())]);
if (!lt) fail('no logout token within 10 s');
const logout = await jwtVerify(lt, jwks, { issuer: issuerURL, audience: clientID, typ: 'logout+jwt',
  requiredClaims: ['iat', 'jti', 'events'], maxTokenAge: '2m' });
if (!('http://schemas.openid.net/event/backchannel-logout' in (logout.payload.events ?? {})) || 'nonce' in logout.payload ||
  logout.payload.sid !== claims.sid || logout.payload.sub !== claims.sub) fail('logout token ' + JSON.stringify(logout.payload));
receiver.close();
receiver.closeAllConnections();

// prompt=none with no session (the jar is emptied) is login_required.
jar.clear();
await errorCallback('prompt=none without a session', 'none', async (p) => p, 'login_required');

// 8. Revocation of a refresh token through the helper: it is then inactive
// and refused.
const fresh = await client.grant({ grant_type: 'password', username, password, scope: 'openid offline_access' });
if (!fresh.refresh_token) fail('no refresh token from the password grant');
await client.revoke(fresh.refresh_token, 'refresh_token');
const dead = await client.introspect(fresh.refresh_token, 'refresh_token');
if (dead.active !== false || Object.keys(dead).length !== 1) fail('revoked refresh token ' + JSON.stringify(dead));
await refusal('refresh with a revoked token', () => client.refresh(fresh.refresh_token), (e) => e.name === 'OPError' && e.error === 'invalid_grant');
console.log('OK');
