// Drives browser sign-in at a running Portcullis with panva's openid-client,
// as a Node web app would: discovery, an authorization URL with PKCE (S256),
// state and nonce; the login and consent forms submitted over HTTP with a
// cookie jar (Node's fetch, cookies kept by hand); the callback parameters
// validated by openid-client (state and the RFC 9207 iss), the code
// exchanged, the id token validated; then a refresh. Tampered callbacks
// (another state, another iss) are refused by openid-client.
// Usage: node authcode.mjs ISSUER CLIENT_ID CLIENT_SECRET|- REDIRECT_URI USERNAME PASSWORD ALG
import { Issuer, generators } from 'openid-client';
import { browser } from './browser.mjs';

const [issuerURL, clientID, clientSecret, redirectURI, username, password, alg] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

const issuer = await Issuer.discover(issuerURL);
if (issuer.issuer !== issuerURL) fail(`issuer ${issuer.issuer} != ${issuerURL}`);
if (issuer.metadata.authorization_response_iss_parameter_supported !== true) fail('discovery does not advertise the iss parameter');
if (!issuer.metadata.code_challenge_methods_supported?.includes('S256')) fail('discovery does not list S256');
// CLIENT_SECRET "-" is a public client (no secret: PKCE alone binds the code).
const metadata = { client_id: clientID, redirect_uris: [redirectURI], response_types: ['code'], id_token_signed_response_alg: alg };
const client = new issuer.Client(clientSecret === '-' ? { ...metadata, token_endpoint_auth_method: 'none' }
  : { ...metadata, client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic' });

// A browser: a cookie jar over fetch, redirects followed by hand (browser.mjs).
const { jar, request, submit, follow } = browser(issuerURL, redirectURI, fail);

// signIn runs the flow in the browser and returns the callback URL and the
// values the client keeps (verifier, state, nonce). expectLogin: the login
// and consent pages show; expectConsent: only the consent page shows.
const signIn = async (expectLogin, expectConsent) => {
  const code_verifier = generators.codeVerifier();
  const state = generators.state(), nonce = generators.nonce();
  const url = client.authorizationUrl({ scope: 'openid email', code_challenge: generators.codeChallenge(code_verifier),
    code_challenge_method: 'S256', state, nonce });
  let page = await follow(await request(url));
  if (expectLogin) {
    if (page.status !== 200 || !page.body.includes('name="username"')) fail(`login page: ${page.status} ${page.body.slice(0, 300)}`);
    page = await follow(await submit(page, { username, password }));
  }
  if (expectLogin || expectConsent) {
    if (page.status !== 200 || !page.body.includes('value="allow"')) fail(`consent page: ${page.status} ${page.body.slice(0, 300)}`);
    page = await follow(await submit(page, { decision: 'allow' }));
  }
  if (!page.callback) fail(`no redirect to the client: ${page.status} ${page.body?.slice(0, 300)}`);
  return { callback: page.callback, checks: { code_verifier, state, nonce } };
};

const first = await signIn(true);
if (!jar.has('portcullis-session')) fail('no session cookie: ' + [...jar.keys()]);
const params = client.callbackParams(first.callback);
if (params.iss !== issuerURL || !params.code || params.state !== first.checks.state) fail('callback ' + JSON.stringify(params));

// Tampered callbacks are refused by openid-client before any exchange.
const refused = async (what, p, checks, why) => {
  try { await client.callback(redirectURI, p, checks); } catch (e) { if (e.name === 'RPError' && why.test(e.message)) return; throw e; }
  fail(`openid-client accepted a callback with ${what}`);
};
await refused('another state', { ...params }, { ...first.checks, state: 'another state' }, /state mismatch/);
await refused('another iss', { ...params, iss: 'https://mix-up.example' }, first.checks, /iss mismatch/);
await refused('no iss', { code: params.code, state: params.state }, first.checks, /iss missing/);

const tokens = await client.callback(redirectURI, params, first.checks);
const claims = tokens.claims();
if (claims.iss !== issuerURL || claims.aud !== clientID || claims.nonce !== first.checks.nonce || !claims.sub ||
  !claims.auth_time || !claims.sid || !claims.at_hash || claims.email !== username) fail('id token claims ' + JSON.stringify(claims));
if (JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url')).alg !== alg) fail('id token alg');
if (!tokens.refresh_token) fail('no refresh token');
const info = await client.userinfo(tokens.access_token);
if (info.sub !== claims.sub || info.email !== username) fail('userinfo ' + JSON.stringify(info));

// A refresh: a new id token for the same person, auth_time kept.
const next = await client.refresh(tokens.refresh_token);
if (next.refresh_token === tokens.refresh_token) fail('refresh token not rotated');
const again = next.claims();
if (again.sub !== claims.sub || again.auth_time !== claims.auth_time || again.aud !== clientID) fail('refreshed id token ' + JSON.stringify(again));

// The code is single use, and its reuse revokes what it issued: the
// rotated refresh token is then refused too.
try { await client.callback(redirectURI, params, first.checks); fail('a used code was exchanged again'); } catch (e) { if (e.error !== 'invalid_grant') throw e; }
try { await client.refresh(next.refresh_token); fail('the grant outlived the reuse of its code'); } catch (e) { if (e.error !== 'invalid_grant') throw e; }

// Single sign-on: the next request goes to the client with no login page
// and, for the confidential client, no page at all (the consent was
// remembered). A public client's loopback redirect cannot assure its
// identity (any local program may listen there, RFC 8252 §8.6), so the
// public client is asked for consent again.
const publicLoopback = clientSecret === '-' && /^http:\/\/(127\.0\.0\.1|\[::1\])[:/]/.test(redirectURI);
const sso = await signIn(false, publicLoopback);
const ssoTokens = await client.callback(redirectURI, client.callbackParams(sso.callback), sso.checks);
// The same person and sign-in (auth_time); a new grant, so its own sid
// (the contract: the id token's sid is the grant's).
const ssoClaims = ssoTokens.claims();
if (ssoClaims.sub !== claims.sub || ssoClaims.auth_time !== claims.auth_time || ssoClaims.sid === claims.sid ||
  ssoClaims.nonce !== sso.checks.nonce) fail('SSO id token ' + JSON.stringify(ssoClaims));
console.log('OK');
