/** Starts a real Distribution registry (Debian `docker-registry`) on loopback, optionally with a token server. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import { freePort, opensslSelfSignedP256 } from '@cloister/testkit';

export interface TokenServer {
  realm: string;
  certFile: string;
  server: Server;
  requests: { scope: string[]; authorized: boolean }[];
}

/**
 * A tiny token server (distribution `docs/spec/auth/token.md`): Basic `user:pass` in, an ES256
 * JWT with an `x5c` self-signed certificate out, granting what the scope asks.
 */
export async function startTokenServer(
  dir: string,
  user: string,
  pass: string,
): Promise<TokenServer> {
  const keyFile = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  opensslSelfSignedP256({ keyFile, certFile, subject: '/CN=cloister-test-token', days: 2 });
  const key = createPrivateKey(readFileSync(keyFile));
  const der = readFileSync(certFile, 'utf8').replace(/-----[^-]+-----|\s/g, '');
  const requests: TokenServer['requests'] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const scope = url.searchParams.getAll('scope');
    const expected = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    const authorized = req.headers.authorization === expected;
    requests.push({ scope, authorized });
    if (!authorized) {
      res.writeHead(401).end();
      return;
    }
    const access = scope.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = (rest.pop() ?? '').split(',');
      return { type, name: rest.join(':'), actions };
    });
    const now = Math.floor(Date.now() / 1000);
    void new jose.SignJWT({ access })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', x5c: [der] })
      .setIssuer('cloister-test-issuer')
      .setAudience(url.searchParams.get('service') ?? '')
      .setSubject(user)
      .setIssuedAt(now - 5)
      .setNotBefore(now - 5)
      .setExpirationTime(now + 300)
      .setJti(String(Math.random()))
      .sign(key)
      .then((token) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token, expires_in: 300 }));
      });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { realm: `http://127.0.0.1:${port}/token`, certFile, server, requests };
}

export interface Registry {
  host: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts docker-registry on a free loopback port and waits until it answers. */
export async function startRegistry(dir: string, token?: TokenServer): Promise<Registry> {
  const port = await freePort();
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const auth = token
    ? `auth:\n  token:\n    realm: ${token.realm}\n    service: cloister-test\n    issuer: cloister-test-issuer\n    rootcertbundle: ${token.certFile}\n`
    : '';
  const cfg = join(dir, 'registry.yml');
  writeFileSync(
    cfg,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: cloister-test\n${auth}`,
  );
  const proc = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const host = `127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://${host}/v2/`);
      if (r.status === 200 || r.status === 401) break;
    } catch {
      /* not up yet */
    }
    if (proc.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    proc,
    stop: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null) return r();
        proc.on('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
}

export interface FakeRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface FakeResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

export interface FakeServer {
  host: string;
  /** Every request in arrival order, bodies included. */
  requests: FakeRequest[];
  close(): Promise<void>;
}

/**
 * A scripted HTTP server on loopback for protocol cases a real registry never produces (odd
 * Location headers, challenges from a CDN, failing token servers). Reads each request body
 * whole before answering, so uploads can be checked byte for byte.
 */
export async function startFakeServer(
  handler: (r: FakeRequest) => FakeResponse,
): Promise<FakeServer> {
  const requests: FakeRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: FakeRequest = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      requests.push(r);
      const out = handler(r);
      res.writeHead(out.status, out.headers ?? {});
      res.end(out.body ?? '');
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
