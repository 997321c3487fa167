/**
 * Start-up of a coordinator: open (or create) the sealed store, load (or create) the root CA,
 * issue the TLS certificate of its own listener from that root, check the stored manifest
 * history, purge instances expired past retention (then again periodically), and serve the API
 * over TLS.
 *
 * TEE integration. A coordinator needs a sealer (for its data key) and an attester (for
 * `/v1/attest`). On TEE hardware those come from the platform (injected through `tee`); with
 * `simulation: { rootDir }` they come from the simulation TEE (docs/coordinator.md):
 * - the measurement is `coordinatorSimMeasurement()`: simMeasurement(bytes of the Node.js
 *   executable, ["@cloister/coordinator", <package version>]), which `cloister verify` can
 *   recompute on the same machine;
 * - the data key is sealed with HKDF-SHA256(the sim platform's private scalar, salt
 *   "cloister/seal/sim/v1", info = that measurement).
 * Without either, start-up fails closed (COORDINATOR_NO_TEE): nothing silently runs unsealed.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import {
  importSimHardware,
  simReportFrom,
  simRootAnchor,
  verifyEvidence,
  verifySimReport,
} from '@cloister/evidence';
import type {
  CollateralSource,
  SnpProductRoots,
  SnpProduct,
  TrustAnchor,
} from '@cloister/evidence';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { destination, pino } from 'pino';
import { coordinatorError } from './error-codes.js';
import { dispatchingVerifier } from './evidence-verifier.js';
import type { EvidenceVerifier, TypeVerifier } from './evidence-verifier.js';
import { buildServer } from './http/server.js';
import {
  createRootCa,
  generateP256,
  issueServerCert,
  loadCa,
  privateKeyPem,
  spkiDer,
} from './mesh-ca.js';
import type { StoredCa } from './mesh-ca.js';
import { createMetrics } from './metrics.js';
import { NonceStore } from './nonces.js';
import { CoordinatorService } from './service.js';
import type { CoordinatorAttester } from './service.js';
import { DerivedKeySealer } from './store/sealer.js';
import type { Sealer } from './store/sealer.js';
import { Store, stateError } from './store/store.js';
import { loadOrCreateImageKey } from './image-keys.js';
import type { Durability } from './store/store.js';
import { COORDINATOR_VERSION, coordinatorSimMeasurement } from './measurement.js';

export interface CoordinatorOptions {
  /** Directory of the sealed state (created if missing). */
  readonly dataDir: string;
  /** `HOST:PORT` (`[::1]:PORT` for IPv6); port 0 picks a free port. */
  readonly listen: string;
  /** PEM SPKI of the owner key that must sign the first manifest. */
  readonly ownerKeyPem: string;
  /** Run on the simulation TEE whose hardware files are in `rootDir` (development only). */
  readonly simulation?: { readonly rootDir: string };
  /** Sealer and attester of real TEE hardware. */
  readonly tee?: { readonly sealer: Sealer; readonly attester: CoordinatorAttester };
  /** Collateral and roots for hardware evidence verification (production roots by default). */
  readonly verification?: {
    readonly collateralSource?: CollateralSource;
    readonly intelRoots?: readonly TrustAnchor[];
    readonly snpRoots?: Partial<Readonly<Record<SnpProduct, SnpProductRoots>>>;
  };
  readonly logger?: FastifyBaseLogger;
  /** Lifetime of workload mesh certificates (default 24 h). */
  readonly leafValidityMs?: number;
  /**
   * What an acknowledged write survives (docs/adr/0003-coordinator-durability.md): `process`
   * (default) = the coordinator process being killed; `full` = also an OS crash or power loss
   * (an fsync per commit).
   */
  readonly durability?: Durability;
  /**
   * How long an instance stays in the store after its certificate expired (default 7 days,
   * `DEFAULT_INSTANCE_RETENTION_MS`): until then it can renew with its per-instance secrets,
   * after it the row is deleted. Without this, instances whose agents died (and never released
   * them) would stay forever.
   */
  readonly instanceRetentionMs?: number;
  /**
   * Period of the purge of instances expired past retention (default
   * `instancePurgeIntervalMs(retention)`); tests set a short one.
   */
  readonly instancePurgeIntervalMs?: number;
  /** Lifetime of activation nonces (default 60 s). */
  readonly nonceTtlMs?: number;
  /** Request body limit in bytes (default 1 MiB). */
  readonly bodyLimit?: number;
  /** Clock (tests). */
  readonly now?: () => Date;
}

export interface RunningCoordinator {
  /** `https://host:port` */
  readonly url: string;
  /** PEM of the root CA clients pin. */
  readonly rootCaPem: string;
  /** The Fastify instance (for `inject` in tests). */
  readonly server: FastifyInstance;
  readonly service: CoordinatorService;
  close(): Promise<void>;
}

/**
 * Default instance retention: 7 days. An agent that comes back within a week (a node down
 * over a long weekend, a paused deployment) still renews its instance and keeps its
 * per-instance secrets; a week of dead instances is a bounded number of rows.
 */
export const DEFAULT_INSTANCE_RETENTION_MS = 7 * 86_400_000;

/**
 * How often instances expired past `retentionMs` are purged: a quarter of the retention, so a
 * row outlives its retention by at most a quarter of it, but at least every hour (a purge
 * then has at most an hour of expiries to delete) and at most every second.
 */
export function instancePurgeIntervalMs(retentionMs: number): number {
  return Math.min(Math.max(Math.floor(retentionMs / 4), 1_000), 3_600_000);
}

/** The longest delay a timer takes (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Checks a duration option: a finite number of ms in `1..max`. */
function durationOption(name: string, value: number, max: number): number {
  if (!(Number.isFinite(value) && value >= 1 && value <= max)) {
    throw coordinatorError('COORDINATOR_BAD_CONFIG', `${name} must be 1..${max} ms`, {
      details: { rule: name, expected: `1..${max}`, actual: String(value) },
    });
  }
  return value;
}

/** The periodic purge of expired instances, see `startInstancePurge`. */
interface InstancePurge {
  /** The first purge (resolves when it ended, also when it failed: that is logged). */
  readonly first: Promise<void>;
  /** Stops the timer, lets a running purge finish its batch and waits for it. */
  stop(): Promise<void>;
}

/**
 * Purges instances expired past retention now and then every `intervalMs`, one purge at a
 * time. The timer is unref'd, so it never keeps the process alive; `stop` leaves no timer and
 * no purge running, so nothing writes to the store after it is closed. A failed purge is logged
 * and retried at the next tick: keeping rows a little longer harms nothing.
 */
function startInstancePurge(
  service: CoordinatorService,
  logger: FastifyBaseLogger,
  intervalMs: number,
): InstancePurge {
  const abort = new AbortController();
  let running: Promise<void> | undefined;
  const run = (): Promise<void> => {
    running ??= service
      .purgeExpiredInstances({ signal: abort.signal })
      .then(
        () => undefined,
        (err: unknown) => logger.error({ err }, 'purging expired instances failed'),
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => void run(), intervalMs).unref();
  return {
    first: run(),
    async stop() {
      clearInterval(timer);
      abort.abort();
      await running;
    },
  };
}

/** A pino logger writing JSON lines to a file descriptor (2: stderr), as Fastify wants it. */
export function createLogger(level = 'info', fd = 2): FastifyBaseLogger {
  return pino({ level }, destination(fd));
}

/** Splits `HOST:PORT`. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw coordinatorError(
      'COORDINATOR_BAD_CONFIG',
      `--listen must be HOST:PORT, got ${JSON.stringify(listen)}`,
    );
  }
  return { host: m[1] ?? m[2] ?? '', port };
}

/** Loads the simulation TEE from its hardware directory. */
async function simulationTee(rootDir: string): Promise<{
  sealer: Sealer;
  attester: CoordinatorAttester;
  verify: TypeVerifier;
}> {
  const read = (f: string): string => {
    try {
      return readFileSync(join(rootDir, f), 'utf8');
    } catch (cause) {
      throw coordinatorError('COORDINATOR_BAD_CONFIG', `--sim-root: cannot read ${f}`, { cause });
    }
  };
  const keyText = read('platform.key.jwk');
  const hw = await importSimHardware({
    'root.crt.pem': read('root.crt.pem'),
    'platform.crt.pem': read('platform.crt.pem'),
    'platform.key.jwk': keyText,
  });
  let d: unknown;
  try {
    d = (JSON.parse(keyText) as { d?: unknown }).d;
  } catch (cause) {
    throw coordinatorError('COORDINATOR_BAD_CONFIG', '--sim-root: platform.key.jwk is not JSON', {
      cause,
    });
  }
  if (typeof d !== 'string')
    throw coordinatorError(
      'COORDINATOR_BAD_CONFIG',
      '--sim-root: platform.key.jwk has no private scalar',
    );
  const measurement = await coordinatorSimMeasurement();
  const anchor = simRootAnchor(hw);
  return {
    sealer: new DerivedKeySealer('sim', new Uint8Array(Buffer.from(d, 'base64url')), measurement),
    attester: {
      type: 'sim',
      evidence: async (reportData) => ({
        type: 'sim',
        data: await simReportFrom(hw, { measurement, reportData }),
      }),
    },
    // The per-manifest opt-in (policy.allowSimulation) is checked by the service before this.
    verify: async (ev, now) => ({
      claims: await verifySimReport(ev.data, { now, roots: [anchor], allowSimulation: true }),
    }),
  };
}

function hardwareVerifiers(
  o: CoordinatorOptions['verification'],
): Partial<Record<'sgx' | 'tdx' | 'sev-snp', TypeVerifier>> {
  const v =
    (type: 'sgx' | 'tdx' | 'sev-snp'): TypeVerifier =>
    async (ev, now) => {
      const r = await verifyEvidence(type, ev.data, {
        now,
        certs: ev.certs,
        ...(o?.collateralSource === undefined ? {} : { collateralSource: o.collateralSource }),
        ...(o?.intelRoots === undefined ? {} : { intelRoots: o.intelRoots }),
        ...(o?.snpRoots === undefined ? {} : { snpRoots: o.snpRoots }),
      });
      return {
        claims: r.claims,
        ...(r.tcbStatus === undefined ? {} : { tcbStatus: r.tcbStatus }),
        ...(r.advisoryIds === undefined ? {} : { advisoryIds: r.advisoryIds }),
      };
    };
  return { sgx: v('sgx'), tdx: v('tdx'), 'sev-snp': v('sev-snp') };
}

/** Starts a coordinator. */
export async function createCoordinator(o: CoordinatorOptions): Promise<RunningCoordinator> {
  const logger = o.logger ?? pino({ level: 'info' });
  const { host, port } = parseListen(o.listen);
  const now = o.now ?? (() => new Date());
  const retentionMs = durationOption(
    'instanceRetentionMs',
    o.instanceRetentionMs ?? DEFAULT_INSTANCE_RETENTION_MS,
    Number.MAX_SAFE_INTEGER,
  );
  const purgeIntervalMs = durationOption(
    'instancePurgeIntervalMs',
    o.instancePurgeIntervalMs ?? instancePurgeIntervalMs(retentionMs),
    MAX_TIMER_MS,
  );
  if (!/-----BEGIN PUBLIC KEY-----/.test(o.ownerKeyPem)) {
    throw coordinatorError('COORDINATOR_BAD_CONFIG', '--owner-key must be a PEM public key');
  }

  let sealer: Sealer;
  let attester: CoordinatorAttester;
  const verifiers: Partial<Record<'sim' | 'sgx' | 'tdx' | 'sev-snp', TypeVerifier>> =
    hardwareVerifiers(o.verification);
  if (o.simulation !== undefined) {
    const sim = await simulationTee(o.simulation.rootDir);
    sealer = o.tee?.sealer ?? sim.sealer;
    attester = o.tee?.attester ?? sim.attester;
    verifiers.sim = sim.verify;
  } else if (o.tee !== undefined) {
    ({ sealer, attester } = o.tee);
  } else {
    throw coordinatorError(
      'COORDINATOR_NO_TEE',
      'no TEE sealing or attestation is available on this machine',
    );
  }
  const verifier: EvidenceVerifier = dispatchingVerifier(verifiers);

  const store = await Store.open(o.dataDir, sealer, {
    ...(o.durability === undefined ? {} : { durability: o.durability }),
  });
  let purge: InstancePurge | undefined;
  try {
    // Earlier versions stored nonces; none of them is valid after a restart.
    store.purgeExpired('nonces', Number.MAX_SAFE_INTEGER);
    let storedRoot = store.get<StoredCa>('meta', 'rootCa');
    if (storedRoot === undefined) {
      const created = (await createRootCa(now())).stored;
      storedRoot = store.transaction(() => {
        const again = store.get<StoredCa>('meta', 'rootCa');
        if (again !== undefined) return again;
        store.put('meta', 'rootCa', created);
        return created;
      });
    }
    const root = await loadCa(storedRoot);

    const tlsKeys = await generateP256();
    const tlsSpki = await spkiDer(tlsKeys.publicKey);
    const ip = isIP(host) !== 0;
    const tlsCert = await issueServerCert(root, {
      publicKey: tlsKeys.publicKey,
      dnsNames: [...new Set(['localhost', ...(ip ? [] : [host])])],
      ips: [...new Set(['127.0.0.1', '::1', ...(ip ? [host] : [])])],
      now: now(),
      validityMs: 365 * 86_400_000,
    });

    const metrics = createMetrics();
    const service = new CoordinatorService({
      store,
      nonces: new NonceStore(o.nonceTtlMs ?? 60_000),
      verifier,
      attester,
      ownerKeyPem: o.ownerKeyPem,
      simulation: o.simulation !== undefined,
      root,
      tlsSpkiDer: tlsSpki,
      imageKey: loadOrCreateImageKey(store),
      leafValidityMs: o.leafValidityMs ?? 86_400_000,
      instanceRetentionMs: retentionMs,
      metrics,
      logger,
      now,
      version: COORDINATOR_VERSION,
    });
    // Refuse to serve state whose history does not verify (tampering, or a broken disk).
    await service.verifyHistory();
    // Instances whose agents died are never released: purge those expired past retention
    // before serving, then periodically.
    purge = startInstancePurge(service, logger, purgeIntervalMs);
    await purge.first;

    const server = await buildServer(service, {
      https: { key: await privateKeyPem(tlsKeys.privateKey), cert: tlsCert.pem },
      logger,
      metrics,
      ...(o.bodyLimit === undefined ? {} : { bodyLimit: o.bodyLimit }),
      version: COORDINATOR_VERSION,
    });
    await server.listen({ host, port });
    const addr = server.server.address();
    const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
    const urlHost = isIP(host) === 6 ? `[${host}]` : host;
    logger.info(
      { url: `https://${urlHost}:${actualPort}`, simulation: o.simulation !== undefined },
      'coordinator listening',
    );
    let closed = false;
    return {
      url: `https://${urlHost}:${actualPort}`,
      rootCaPem: root.cert.toString('pem'),
      server,
      service,
      async close() {
        if (closed) return;
        closed = true;
        await purge?.stop();
        await server.close();
        store.close();
      },
    };
  } catch (e) {
    await purge?.stop();
    store.close();
    // A database that opened but is damaged further in fails here, at its first read.
    throw stateError(e);
  }
}
