// Drives a running Portcullis with panva's openid-client (discovery, password
// grant, refresh, client_credentials, introspection, revocation, userinfo) and
// verifies its access tokens with jose's remote JWKS, as a Node service would.
// Usage: node interop.mjs ISSUER CLIENT_ID CLIENT_SECRET USERNAME PASSWORD CC_ID CC_SECRET ALG
import { Issuer } from 'openid-client';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

const [issuerURL, clientID, clientSecret, username, password, ccID, ccSecret, alg] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };

const issuer = await Issuer.discover(issuerURL);
if (issuer.issuer !== issuerURL) fail(`issuer ${issuer.issuer} != ${issuerURL}`);
if (!issuer.metadata.id_token_signing_alg_values_supported.includes(alg)) fail('discovery does not list ' + alg);
const client = new issuer.Client({ client_id: clientID, client_secret: clientSecret,
  token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: alg });
const jwks = createRemoteJWKSet(new URL(issuer.metadata.jwks_uri));
const verifyAT = async (token) => (await jwtVerify(token, jwks, { issuer: issuerURL, audience: 'api', typ: 'at+jwt' })).payload;

// Password grant and the id token (openid-client validates the id token itself).
const login = await client.grant({ grant_type: 'password', username, password, scope: 'openid email' });
if (!login.refresh_token || !login.id_token) fail('no refresh or id token');
const claims = login.claims();
if (claims.aud !== clientID || claims.email !== username) fail('id token claims ' + JSON.stringify(claims));
const at = await verifyAT(login.access_token);
if (!at.sub || !at.jti || !at.client_id || !Array.isArray(at.roles)) fail('access token claims ' + JSON.stringify(at));
if (decodeProtectedHeader(login.access_token).typ !== 'at+jwt') fail('typ');

// An id token is not an access token.
try { await verifyAT(login.id_token); fail('jose accepted an id token as an access token'); } catch (e) { if (!String(e.code).startsWith('ERR_JWT')) throw e; }

// Refresh rotates; the old refresh token is then refused as reuse.
const next = await client.refresh(login.refresh_token);
if (next.refresh_token === login.refresh_token) fail('refresh token not rotated');
await verifyAT(next.access_token);
try { await client.refresh(login.refresh_token); fail('reused refresh token accepted'); } catch (e) { if (e.error !== 'invalid_grant') throw e; }

// client_credentials with another client, then introspection and revocation.
const cc = new issuer.Client({ client_id: ccID, client_secret: ccSecret });
const svc = await cc.grant({ grant_type: 'client_credentials' });
const svcClaims = await verifyAT(svc.access_token);
if (svcClaims.sub !== ccID) fail('client_credentials sub ' + svcClaims.sub);
const login2 = await client.grant({ grant_type: 'password', username, password });
const live = await cc.introspect(login2.access_token);
if (live.active !== true || live.client_id !== clientID) fail('introspection ' + JSON.stringify(live));
const info = await client.userinfo(login2.access_token);
if (info.email !== username || info.email_verified !== true) fail('userinfo ' + JSON.stringify(info));
await client.revoke(login2.access_token);
const dead = await cc.introspect(login2.access_token);
if (dead.active !== false || Object.keys(dead).length !== 1) fail('revoked token ' + JSON.stringify(dead));
console.log('OK');
