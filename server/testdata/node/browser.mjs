// The browser of the Node harness (authcode.mjs, extra.mjs): Node's fetch
// with a cookie jar kept by hand, redirects followed by hand and the forms
// of Portcullis's pages submitted as served.

// browser returns a browser with an empty cookie jar at a Portcullis whose
// issuer is issuerURL (its origin is the Origin of the forms posted), for a
// client whose redirect URI is redirectURI; fail reports a page without a
// form. It returns the jar (a Map of cookie names to values) and:
//   request(url, init): fetch with the jar's cookies, keeping those set;
//     the answer's status, location, body and url;
//   submit(page, fields): post the page's form (its hidden fields plus
//     fields);
//   follow(page, stop): go through Portcullis's redirects and return the
//     page shown, or { callback } with the URL of the redirect out of
//     Portcullis (to a URL starting with stop, redirectURI unless given).
export const browser = (issuerURL, redirectURI, fail) => {
  const jar = new Map();
  const keep = (res) => {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim(), value = pair.slice(i + 1).trim();
      if (attrs.some((a) => /^\s*max-age=(-|0$)/i.test(a)) || value === '') jar.delete(name); else jar.set(name, value);
    }
  };
  const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const origin = new URL(issuerURL).origin;
  const request = async (url, init = {}) => {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookie() } });
    keep(res);
    return { status: res.status, location: res.headers.get('location'), body: await res.text(), url };
  };
  const unescape = (s) => s.replace(/&#43;/g, '+').replace(/&#39;/g, "'").replace(/&#34;/g, '"').replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  const submit = (page, fields) => {
    const action = page.body.match(/<form method="post" action="([^"]+)"/);
    if (!action) fail(`no form on the page (${page.status}): ${page.body.slice(0, 300)}`);
    const form = new URLSearchParams();
    for (const m of page.body.matchAll(/<input type="hidden" name="([a-z_]+)" value="([^"]*)">/g)) form.set(m[1], unescape(m[2]));
    for (const [k, v] of Object.entries(fields)) form.set(k, v);
    return request(new URL(unescape(action[1]), page.url).href, { method: 'POST', body: form.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin } });
  };
  const follow = async (page, stop = redirectURI) => {
    for (let i = 0; i < 10 && page.status === 303; i++) {
      const next = new URL(page.location, page.url).href;
      if (next.startsWith(stop)) return { callback: next };
      page = await request(next);
    }
    return page;
  };
  return { jar, request, submit, follow };
};
