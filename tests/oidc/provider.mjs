// The OpenID provider of the tests: panva's oidc-provider (OpenID Certified), configured here.
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json (written by tests/oidc_support.py, mode 0600) holds the issuer URL, the one
// client (id, secret, redirect URI, post-logout redirect URI), the token lifetimes and the static test identities with
// their generated passwords and claims. Everything protocol-related (discovery, authorization,
// PKCE, tokens, refresh, userinfo, state handling) is oidc-provider's own; only the login and
// consent pages are ours, because the library's development pages accept any login.
import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const identities = new Map(config.identities.map((identity) => [identity.login, identity]));
const bySubject = new Map(config.identities.map((identity) => [identity.sub, identity]));

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  .export({ format: 'jwk' });

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.client.id,
    client_secret: config.client.secret,
    redirect_uris: [config.client.redirect_uri],
    post_logout_redirect_uris: config.client.post_logout_redirect_uri
      ? [config.client.post_logout_redirect_uri] : [],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [{ ...signingKey, use: 'sig', kid: 'test' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: false },
    // RP-initiated logout (the hub's logout ends the session here too). Our own pages: the
    // library's load web fonts from the internet.
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = `<!doctype html><html><head><title>Sign out</title></head><body>
<h1>Sign out of the test identity provider?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button></body></html>`;
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = '<!doctype html><html><head><title>Signed out</title></head><body>'
          + '<h1>Signed out</h1></body></html>';
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'projects'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    projects: ['projects'],
  },
  // Refresh tokens for our client whenever it may use them (the hub keeps them in auth_state).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: config.access_token_ttl || 3600 },
  async findAccount(ctx, sub) {
    const identity = bySubject.get(sub);
    if (!identity) return undefined;
    return { accountId: sub, async claims() { return { sub, ...identity.claims }; } };
  },
});

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(`<!doctype html><html><head><title>${escape(title)}</title></head><body>
<h1>${escape(title)}</h1>${body}</body></html>`);
}

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 10000) throw new Error('form too large');
  }
  return new URLSearchParams(raw);
}

function passwordMatches(identity, given) {
  const want = Buffer.from(identity.password);
  const got = Buffer.from(given || '');
  return want.length === got.length && timingSafeEqual(want, got);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Wrong interaction', '');
  const { prompt, params, session } = details;
  if (req.method === 'GET' && prompt.name === 'login') {
    return page(res, 200, 'Sign in to the test identity provider', `
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Login <input name="login" autocomplete="off"></label>
  <label>Password <input name="password" type="password"></label>
  <button type="submit">Sign in</button>
</form>`);
  }
  if (req.method === 'GET' && prompt.name === 'consent') {
    return page(res, 200, 'Authorize', `
<p>${escape(params.client_id)} asks for: ${escape(params.scope)}</p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
  <button type="submit">Continue</button>
</form>`);
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await formBody(req);
    const identity = identities.get(form.get('login'));
    if (!identity || !passwordMatches(identity, form.get('password'))) {
      return page(res, 401, 'Sign-in failed', '<p>Unknown login or wrong password.</p>');
    }
    return provider.interactionFinished(req, res, { login: { accountId: identity.sub } },
      { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm' && prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
  }
  return page(res, 400, 'Unexpected step', `<p>${escape(prompt.name)}</p>`);
}

const callback = provider.callback();
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?$/;

createServer(async (req, res) => {
  const match = INTERACTION.exec(new URL(req.url, config.issuer).pathname);
  if (!match) return callback(req, res);
  try {
    return await interaction(req, res, match[1], match[2]);
  } catch (err) {
    console.error(`interaction ${match[1]}: ${err.message}`);
    return page(res, 400, 'Interaction failed', `<p>${escape(err.message)}</p>`);
  }
}).listen(new URL(config.issuer).port, '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${config.issuer}`);
});
