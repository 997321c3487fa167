/** Shared fixtures of the coordinator tests: sim hardware, owner keys, manifests, a fake agent. */
import 'reflect-metadata';
import { strict as assert } from 'node:assert';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { exportSimHardware, generateSimHardware, simReportFrom } from '@cloister/evidence';
import type { SimHardware } from '@cloister/evidence';
import {
  ROUTES,
  activationReportData,
  checkBody,
  manifestHash,
  nonceFromBase64Url,
  renewalSignedBytes,
  signAsOwner,
  toBase64Url,
  transitionHash,
  transitionSignedBytes,
  ZERO_HASH,
} from '@cloister/protocol';
import type { Manifest, OwnerSignature, TransitionKind } from '@cloister/protocol';
import { pino } from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { createCoordinator } from '../src/coordinator.js';
import type { CoordinatorOptions, RunningCoordinator } from '../src/coordinator.js';

export const silent = pino({ level: 'silent' }) as unknown as FastifyBaseLogger;
export const MEASUREMENT = 'a1'.repeat(48);

export function tempDir(prefix = 'cloister-coord-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface OwnerKey {
  readonly name: string;
  readonly keys: CryptoKeyPair;
  readonly pem: string;
}

export async function ownerKey(name: string): Promise<OwnerKey> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const der = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)).toString(
    'base64',
  );
  const pem = `-----BEGIN PUBLIC KEY-----\n${der.match(/.{1,64}/g)?.join('\n') ?? ''}\n-----END PUBLIC KEY-----\n`;
  return { name, keys, pem };
}

/** Writes sim hardware files into `dir` and returns the hardware. */
export async function simHardware(dir: string): Promise<SimHardware> {
  const hw = await generateSimHardware();
  const files = await exportSimHardware(hw);
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return hw;
}

export function baseManifest(
  over: Partial<Manifest> = {},
  owners?: Record<string, OwnerKey>,
): Manifest {
  return {
    version: 1,
    trustDomain: 'shop.example',
    packages: { dev: { tee: 'sim', measurement: MEASUREMENT } },
    workloads: {
      frontend: {
        package: 'dev',
        maxInstances: 3,
        files: {
          '/run/cloister/tls.crt': '{{ pem .mesh.cert }}',
          '/etc/app/db.conf': 'password={{ string .secrets.dbPassword }}',
          '/etc/app/key.bin': '{{ raw .secrets.apiKey }}',
        },
        env: {
          API_KEY: '{{ hex .secrets.apiKey }}',
          INSTANCE_KEY: '{{ hex .secrets.instanceKey }}',
        },
        args: ['/usr/bin/app', '--listen', ':8080'],
      },
      backend: { package: 'dev' },
    },
    secrets: {
      apiKey: { type: 'symmetric', bits: 256 },
      instanceKey: { type: 'symmetric', bits: 128, perInstance: true },
      apiCert: {
        type: 'cert-ecdsa',
        curve: 'P-256',
        dnsNames: ['api.shop.example'],
        validDays: 90,
      },
      dbPassword: { type: 'plain', userDefined: true },
    },
    owners: Object.fromEntries(
      Object.entries(owners ?? {}).map(([n, k]) => [
        n,
        { publicKey: k.pem, roles: ['update', 'secrets:dbPassword'] },
      ]),
    ),
    updates: { threshold: 1 },
    policy: { allowSimulation: true },
    ...over,
  };
}

/** Signs the transition that installs `manifest` after `prevHash`. */
export async function signTransition(
  manifest: Manifest,
  seq: number,
  prevHash: string,
  kind: TransitionKind,
  signer: OwnerKey,
): Promise<OwnerSignature> {
  const th = await transitionHash({
    seq,
    prevHash,
    manifestHash: await manifestHash(manifest),
    kind,
  });
  return signAsOwner(transitionSignedBytes(th), signer.name, signer.keys.privateKey);
}

export interface Fixture {
  readonly coord: RunningCoordinator;
  readonly hw: SimHardware;
  readonly install: OwnerKey;
  readonly alice: OwnerKey;
  readonly dir: string;
  readonly simDir: string;
  readonly dataDir: string;
  cleanup(): Promise<void>;
}

export async function startFixture(
  opts: Partial<CoordinatorOptions> & { noSimulation?: boolean } = {},
): Promise<Fixture> {
  const { dir, cleanup } = tempDir();
  const simDir = join(dir, 'sim');
  const dataDir = join(dir, 'data');
  const hw = await simHardware(simDir);
  const install = await ownerKey('install');
  const alice = await ownerKey('alice');
  const coord = await createCoordinator({
    dataDir,
    listen: '127.0.0.1:0',
    ownerKeyPem: install.pem,
    simulation: { rootDir: simDir },
    logger: silent,
    ...opts,
  });
  return {
    coord,
    hw,
    install,
    alice,
    dir,
    simDir,
    dataDir,
    async cleanup() {
      await coord.close();
      cleanup();
    },
  };
}

/** Installs the first manifest of `f`'s coordinator, signed by the install owner (asserted). */
export async function installManifest(f: Fixture, manifest: Manifest): Promise<void> {
  const sig = await signTransition(manifest, 0, ZERO_HASH, 'set', f.install);
  const r = await f.coord.server.inject({
    method: 'PUT',
    url: '/v1/manifest',
    payload: { manifest, signatures: [sig] },
  });
  assert.equal(r.statusCode, 200, r.body);
}

/**
 * A fake agent: a fresh P-256 certificate key and its CSR, and a fresh X25519 bundle key (its
 * raw public half, base64url, as the request carries it).
 */
export interface FakeAgent {
  readonly keys: CryptoKeyPair;
  readonly csr: string;
  readonly spki: Uint8Array;
  readonly bundleKey: string;
  readonly bundleRaw: Uint8Array;
  /** Opens the bundle (`decryptBundle`). */
  readonly bundlePrivate: CryptoKey;
}

export async function agentKey(): Promise<FakeAgent> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=agent',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey));
  const bundle = (await webcrypto.subtle.generateKey({ name: 'X25519' }, false, [
    'deriveBits',
  ])) as CryptoKeyPair;
  const bundleRaw = new Uint8Array(await webcrypto.subtle.exportKey('raw', bundle.publicKey));
  return {
    keys,
    csr: csr.toString('pem'),
    spki,
    bundleKey: toBase64Url(bundleRaw),
    bundleRaw,
    bundlePrivate: bundle.privateKey,
  };
}

/** Sim evidence binding `nonce` and the agent's two keys. */
export async function simEvidence(
  hw: SimHardware,
  nonce: string,
  agent: Pick<FakeAgent, 'spki' | 'bundleRaw'>,
  fields: { measurement?: string; debug?: boolean; svn?: number } = {},
): Promise<{ type: 'sim'; data: string }> {
  const reportData = await activationReportData(
    nonceFromBase64Url(nonce),
    agent.spki,
    agent.bundleRaw,
  );
  const data = await simReportFrom(hw, {
    measurement: new Uint8Array(Buffer.from(fields.measurement ?? MEASUREMENT, 'hex')),
    reportData,
    ...(fields.debug === undefined ? {} : { debug: fields.debug }),
    ...(fields.svn === undefined ? {} : { svn: fields.svn }),
  });
  return { type: 'sim', data: toBase64Url(data) };
}

/**
 * The `instanceSignature` of a renewal of `instanceId` for `nonce` and the new agent's keys,
 * made with `key` (ECDSA P-256, raw r||s, base64url).
 */
export async function renewalSignature(
  key: CryptoKey,
  instanceId: string,
  nonce: string,
  agent: Pick<FakeAgent, 'spki' | 'bundleRaw'>,
): Promise<string> {
  const reportData = await activationReportData(
    nonceFromBase64Url(nonce),
    agent.spki,
    agent.bundleRaw,
  );
  const sig = await webcrypto.subtle.sign(
    { name: 'ECDSA', hash: 'SHA-256' },
    key,
    renewalSignedBytes(instanceId, nonce, reportData),
  );
  return toBase64Url(new Uint8Array(sig));
}

/**
 * One activation of `workload` (default `frontend`) with sim evidence for a fresh agent, or with
 * `instanceId` a renewal, signed with `instanceKey` (the instance's current mesh key; without
 * it, the new agent's own key, which is never the instance's: a sibling's attempt);
 * `measurement` and `debug` change what the evidence claims.
 */
export async function simActivation(
  f: Fixture,
  o: {
    workload?: string;
    instanceId?: string;
    instanceKey?: CryptoKey;
    measurement?: string;
    debug?: boolean;
  } = {},
) {
  const agent = await agentKey();
  const ch = await f.coord.server.inject({ method: 'POST', url: '/v1/activate/challenge' });
  assert.equal(ch.statusCode, 200, ch.body);
  const { nonce } = checkBody(ROUTES.activateChallenge.response, ch.json());
  const evidence = await simEvidence(f.hw, nonce, agent, {
    ...(o.measurement === undefined ? {} : { measurement: o.measurement }),
    ...(o.debug === undefined ? {} : { debug: o.debug }),
  });
  const r = await f.coord.server.inject({
    method: 'POST',
    url: '/v1/activate',
    payload: {
      workload: o.workload ?? 'frontend',
      nonce,
      evidence,
      csr: agent.csr,
      bundleKey: agent.bundleKey,
      ...(o.instanceId === undefined
        ? {}
        : {
            instanceId: o.instanceId,
            instanceSignature: await renewalSignature(
              o.instanceKey ?? agent.keys.privateKey,
              o.instanceId,
              nonce,
              agent,
            ),
          }),
    },
  });
  return { r, agent, nonce, evidence };
}

export { ZERO_HASH };
