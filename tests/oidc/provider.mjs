// A real OpenID Connect provider (panva/oidc-provider) for the gateway's identity tests.
//
// Usage: OIDC_TEST_CONFIG=/path/config.json node tests/oidc/provider.mjs
//
// The JSON config file (written by tests/oidcfixture.py) holds:
//   port            TCP port on 127.0.0.1 (0 = pick a free one)
//   audience        the gateway's audience, used as the only resource indicator
//   jwks            {"keys": [...]} private signing keys (the tests forge tokens with them too)
//   accessTokenAlg  JWS alg for access tokens (default RS256)
//   accessTokenTTL  seconds (default 300)
//   issuer          optional public issuer URL (default http://127.0.0.1:<port>)
//   users           {"alice": {"email": ..., "groups": [...], "secret": ...}, ...}
//                   one confidential client per user for the client_credentials grant
//                   (client_id = user key, sub = client_id) and an account of the same
//                   id for the device flow. Per user, for the identity tests:
//                     email           absent or null: the token has no email (nor email_verified)
//                     email_verified  sent as given; absent: true; null: not sent
//                     email_scope     true: email and email_verified only when the token was
//                                     asked for with scope "email" (as many IdPs do)
//
// PUT /_test/users/<id> with a JSON body replaces that user's claims (email, email_verified,
// email_scope, groups; the secret stays): an email changed at the IdP, for the alias tests.
//
// When listening it prints one JSON line on stdout: {"ready": true, "issuer": ..., "port": ...}.
// Everything else (oidc-provider's notices included) goes to stderr, so stdout never fills up.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints notices with console.info/log; keep stdout for the ready line only.
console.info = console.error;
console.log = console.error;

const configPath = process.env.OIDC_TEST_CONFIG ?? process.argv[2];
if (!configPath) {
  console.error('provider.mjs: set OIDC_TEST_CONFIG (or pass the config path as argv[2])');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const {
  audience,
  jwks,
  users = {},
  accessTokenAlg = 'RS256',
  accessTokenTTL = 300,
} = config;
const port = Number(process.env.OIDC_TEST_PORT ?? config.port ?? 0);

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const actualPort = server.address().port;
// `issuer` lets a test put a proxy of its own in front (the issuer is then the proxy's URL).
const issuer = config.issuer ?? `http://127.0.0.1:${actualPort}`;

function userClaims(id, scope) {
  const user = Object.hasOwn(users, id) ? users[id] : undefined;
  if (!user) return undefined;
  const claims = { groups: user.groups ?? [] };
  const emailAsked = !user.email_scope || String(scope ?? '').split(' ').includes('email');
  if (emailAsked && user.email !== undefined && user.email !== null) {
    claims.email = user.email;
    if (user.email_verified !== null) claims.email_verified = user.email_verified ?? true;
  }
  return claims;
}

// Test-only: replace a user's claims while the provider runs (never in a real IdP).
async function updateUser(req, res) {
  const id = decodeURIComponent(req.url.slice('/_test/users/'.length));
  if (req.method !== 'PUT' || !Object.hasOwn(users, id)) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const { email, email_verified: emailVerified, email_scope: emailScope, groups } = JSON.parse(
    Buffer.concat(chunks).toString('utf8'),
  );
  users[id] = { secret: users[id].secret, email, email_verified: emailVerified, email_scope: emailScope, groups };
  res.writeHead(204).end();
}

const clients = Object.entries(users).map(([id, user]) => ({
  client_id: id,
  client_secret: user.secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
}));
// A public client for the CLI's device flow (gateway login), for later tests.
clients.push({
  client_id: 'gateway-cli',
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'none',
});

// The web console's sign-in: authorization code with PKCE, a public client. "native" so that its
// loopback redirect URI matches any port (RFC 8252 section 7.3): each test gateway picks a free one.
clients.push({
  client_id: 'gateway-console',
  application_type: 'native',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/console/callback'],
  token_endpoint_auth_method: 'none',
});

const provider = new Provider(issuer, {
  clients,
  // Without this a keystore lacking an RSA key (ES256-only tests) fails client validation.
  clientDefaults: { id_token_signed_response_alg: accessTokenAlg },
  jwks,
  cookies: { keys: ['oidc-test-provider-cookie-key-not-a-secret'] },
  async findAccount(_ctx, sub) {
    const claims = userClaims(sub);
    if (!claims) return undefined;
    return { accountId: sub, async claims() { return { sub, ...claims }; } };
  },
  claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'gateway'],
  features: {
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    devInteractions: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) throw new errors.InvalidTarget();
        return {
          scope: 'gateway email',
          audience,
          accessTokenTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: accessTokenAlg } },
        };
      },
    },
  },
  // client_credentials tokens: sub = client id; device-flow tokens: sub = account id.
  async extraTokenClaims(_ctx, token) {
    return userClaims(token.accountId ?? token.clientId, token.scope);
  },
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
  },
});

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/_test/users/')) {
    updateUser(req, res).catch(() => res.writeHead(400).end());
    return;
  }
  callback(req, res);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`${JSON.stringify({ ready: true, issuer, port: actualPort })}\n`);
