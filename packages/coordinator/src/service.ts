/**
 * The coordinator's logic behind the HTTP API: manifest governance and history, secrets,
 * activation (evidence -> binding -> appraisal -> instance limit -> certificate -> bundle) and
 * its own attestation. Every state change is one store transaction; nothing async happens inside
 * a transaction, so concurrent activations verify evidence in parallel and only their final
 * check-and-insert is serialised.
 */
import { randomBytes, verify as nodeVerify, webcrypto } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { isCloisterError } from '@cloister/errors';
import { appraise } from '@cloister/evidence';
import type { VerifiedEvidence } from '@cloister/evidence';
import {
  ZERO_HASH,
  activationReportData,
  coordinatorReportData,
  manifestHash,
  nonceFromBase64Url,
  ownerSignedBytes,
  releaseSignedBytes,
  renderWorkload,
  renewalSignedBytes,
  secretDigest,
  transitionHash,
  transitionSignedBytes,
  validateManifest,
  verifyHistory,
  verifyOwnerApprovals,
  verifyOwnerSignature,
  verifyTransitionApproval,
  workloadTemplatePaths,
  toPem,
} from '@cloister/protocol';
import type {
  ActivateResponse,
  AttestResponse,
  HistoryEntry,
  HistoryResponse,
  ImageKeyResponse,
  Manifest,
  ManifestResponse,
  ReleaseInstanceRequest,
  ReleaseInstanceResponse,
  Secret,
  SecretValue,
  SetManifestResponse,
  SetSecretResponse,
  StatusResponse,
  TransitionKind,
} from '@cloister/protocol';
import type { FastifyBaseLogger } from 'fastify';
import { bundleSealer } from './bundle-seal.js';
import { releaseImageKeys } from './image-keys.js';
import type { ImageKey } from './image-keys.js';
import { coordinatorError } from './error-codes.js';
import type { EvidenceInput, EvidenceVerifier } from './evidence-verifier.js';
import type { ActivateBody, PutSecretBody, SetManifestBody } from './http/schemas.js';
import {
  agentSpki,
  createIntermediateCa,
  generateP256,
  issueLeaf,
  leafDnsNames,
  loadCa,
  spkiDer,
  spkiFromCsr,
} from './mesh-ca.js';
import { LiveInstances } from './live-instances.js';
import type { LiveUndo } from './live-instances.js';
import type { LoadedCa, StoredCa } from './mesh-ca.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { NonceStore } from './nonces.js';
import {
  asCoordinatorError,
  generateSecret,
  secretDefinitionKey,
  secretValueOf,
} from './manifest.js';
import type { StoredSecret } from './manifest.js';
import type { Store } from './store/store.js';

/** Produces the coordinator's own evidence (sim, or a hardware provider). */
export interface CoordinatorAttester {
  readonly type: EvidenceInput['type'];
  evidence(reportData: Uint8Array): Promise<{ type: EvidenceInput['type']; data: Uint8Array }>;
}

export interface ServiceOptions {
  readonly store: Store;
  readonly nonces: NonceStore;
  readonly verifier: EvidenceVerifier;
  readonly attester: CoordinatorAttester;
  /** PEM SPKI of the key that must sign the first manifest. */
  readonly ownerKeyPem: string;
  /** True when started with --simulation --sim-root (the second half of the sim opt-in). */
  readonly simulation: boolean;
  readonly root: LoadedCa;
  /** SPKI DER of the TLS listener's key (bound into /v1/attest). */
  readonly tlsSpkiDer: Uint8Array;
  /** The key image layer keys are wrapped to (image-keys.ts). */
  readonly imageKey: ImageKey;
  readonly leafValidityMs: number;
  /**
   * How long an instance stays in the store after its certificate expired: it can renew (and
   * keep its per-instance secrets) until then, and is deleted by `purgeExpiredInstances` after.
   */
  readonly instanceRetentionMs: number;
  readonly metrics: CoordinatorMetrics;
  readonly logger: FastifyBaseLogger;
  readonly now?: () => Date;
  /** Reported by /v1/status. */
  readonly version?: string;
}

/** The current manifest with its intermediate CA (cached until the head moves). */
interface Current {
  readonly hash: string;
  readonly manifest: Manifest;
  readonly intermediate: LoadedCa;
  readonly intermediatePem: string;
  readonly intermediateDer: Uint8Array;
}

interface State {
  manifestHash: string;
  head: string;
  length: number;
}

/** A recorded workload instance. */
export interface InstanceRecord {
  readonly id: string;
  readonly workload: string;
  readonly serial: string;
  readonly notAfter: string;
  readonly manifestHash: string;
  readonly activations: number;
  /** Per-instance secret values (stable across renewals). */
  readonly perInstance: Record<string, StoredSecret>;
  /**
   * SPKI DER (base64url) of the instance's current mesh key: the key whose signature releases
   * or renews the instance. Absent in records written before release existed (those can be
   * neither released nor renewed, and simply expire).
   */
  readonly meshSpki?: string;
}

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');
const fromB64u = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64url'));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Checks that `signature` (ECDSA P-256 / SHA-256, raw r||s, base64url) over `signed` was made
 * with the instance's current mesh key (`meshSpki`, SPKI DER base64url). Knowing an instance id
 * is not enough to act for the instance: every mesh peer sees the id in its certificate. A
 * malformed signature, or a record without a key, is a bad signature.
 */
function checkInstanceSignature(
  what: 'release' | 'renewal',
  meshSpki: string | undefined,
  signed: Uint8Array,
  signature: string,
): void {
  let ok = false;
  try {
    ok =
      meshSpki !== undefined &&
      nodeVerify(
        'sha256',
        signed,
        {
          key: Buffer.from(meshSpki, 'base64url'),
          format: 'der',
          type: 'spki',
          dsaEncoding: 'ieee-p1363',
        },
        fromB64u(signature),
      );
  } catch {
    ok = false;
  }
  if (!ok) {
    throw coordinatorError(
      'COORDINATOR_SIGNATURE_INVALID',
      `the ${what} is not signed by the instance's mesh key`,
      {
        details: {
          rule: `${what}.signature`,
          expected: `ECDSA P-256 over ${what}SignedBytes`,
          actual: 'invalid',
        },
      },
    );
  }
}

/**
 * A new instance id: 32 hex digits, the activation time in ms (48 bits) followed by 80 random
 * bits. Ids that grow with time make each new instance row an append at the right edge of the
 * store's B-tree, not a write into a random page of it: an SQLite commit costs about 40 µs
 * instead of 72 with 20,000 instances (measured). The time adds nothing an observer lacks: the
 * certificate's notBefore carries it already.
 */
function newInstanceId(now: Date): string {
  const ms = Math.min(Math.max(now.getTime() || 0, 0), 2 ** 48 - 1);
  return ms.toString(16).padStart(12, '0') + randomBytes(10).toString('hex');
}

/**
 * Instance rows a purge deletes per commit. A batch is one transaction that activations wait
 * behind: among 200,000 instances, 1,000 rows took 5-9 ms (10,000 took 77-126 ms), so a purge
 * of a large backlog delays an activation by milliseconds, not seconds.
 */
export const INSTANCE_PURGE_BATCH = 1_000;

/**
 * The version the next upload of a user-defined secret must carry: 0 first, then +1. A row
 * without a value already holds that number (0, or where the counting stopped before the
 * secret was redefined or removed).
 */
function nextSecretVersion(s: StoredSecret | undefined): number {
  if (s === undefined) return 0;
  return s.value === null ? s.version : s.version + 1;
}

/** Whether a stored secret is (or was, for a removed one) uploaded by owners. */
function isUserDefined(s: StoredSecret): boolean {
  return (JSON.parse(s.definition) as Secret).userDefined === true;
}

/**
 * The secret rows a manifest leaves in the store, computed from the rows as they are when the
 * transition commits. A secret whose definition is unchanged keeps its row (and so its value
 * and any upload made while the update was checked); a new or changed one gets `generated`.
 *
 * Signed uploads of a user-defined secret are single-use only because its version never
 * repeats. So a redefined one starts empty but counts on, and a removed one that was ever
 * uploaded stays as a row without a value: otherwise the version would start again at 0 and
 * the old signed uploads, captured once, could be replayed in turn to roll the value back.
 */
function nextSecretRows(
  manifest: Manifest,
  rows: ReadonlyMap<string, StoredSecret>,
  generated: ReadonlyMap<string, StoredSecret>,
): Map<string, StoredSecret> {
  const next = new Map<string, StoredSecret>();
  for (const [name, def] of Object.entries(manifest.secrets ?? {})) {
    const prev = rows.get(name);
    const key = secretDefinitionKey(def);
    if (prev !== undefined && prev.definition === key) {
      next.set(name, prev);
      continue;
    }
    const fresh = generated.get(name) ?? { definition: key, value: null, version: 0 };
    const counted = prev !== undefined && isUserDefined(prev) ? nextSecretVersion(prev) : 0;
    next.set(name, def.userDefined === true ? { ...fresh, version: counted } : fresh);
  }
  for (const [name, prev] of rows) {
    if (!next.has(name) && isUserDefined(prev) && nextSecretVersion(prev) > 0) {
      next.set(name, {
        definition: prev.definition,
        value: null,
        version: nextSecretVersion(prev),
      });
    }
  }
  return next;
}

/** Runs `f`, re-raising protocol errors under coordinator codes. */
async function boundary<T>(f: () => Promise<T> | T): Promise<T> {
  try {
    return await f();
  } catch (e) {
    return asCoordinatorError(e);
  }
}

export class CoordinatorService {
  readonly #o: ServiceOptions;
  readonly #now: () => Date;
  /** Cache of the current manifest and its intermediate CA (reloaded when the head moves). */
  #current: Current | undefined;
  /** PEM and DER of the root CA (encoded once). */
  readonly #rootPem: string;
  readonly #rootDer: Uint8Array;
  /** Live instances per workload (the maxInstances check), rebuilt from the store. */
  readonly #live = new LiveInstances();

  constructor(o: ServiceOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => new Date());
    this.#rootPem = o.root.cert.toString('pem');
    this.#rootDer = new Uint8Array(o.root.cert.rawData);
    for (const r of o.store.liveRows('instances', this.#now().getTime())) {
      if (r.grp !== null) this.#live.set(r.grp, r.k, r.exp);
    }
  }

  #state(): State | undefined {
    return this.#o.store.get<State>('meta', 'state');
  }

  ready(): boolean {
    return this.#state() !== undefined;
  }

  async #currentManifest(): Promise<Current> {
    const st = this.#state();
    if (st === undefined)
      throw coordinatorError('COORDINATOR_NO_MANIFEST', 'no manifest has been set');
    if (this.#current?.hash === st.manifestHash) return this.#current;
    const manifest = this.#o.store.get<Manifest>('manifests', st.manifestHash);
    const inter = this.#o.store.get<StoredCa>('intermediates', st.manifestHash);
    if (manifest === undefined || inter === undefined) {
      throw coordinatorError(
        'COORDINATOR_STATE_CORRUPT',
        'the current manifest is missing from the store',
      );
    }
    const intermediate = await loadCa(inter);
    this.#current = {
      hash: st.manifestHash,
      manifest,
      intermediate,
      intermediatePem: intermediate.cert.toString('pem'),
      intermediateDer: new Uint8Array(intermediate.cert.rawData),
    };
    return this.#current;
  }

  challenge(): { nonce: string; expiresAt: Date } {
    return this.#o.nonces.issue(this.#now());
  }

  // ---------------------------------------------------------------- manifest and history

  #entries(): HistoryEntry[] {
    return this.#o.store.list<HistoryEntry>('history').map(([, t]) => t);
  }

  /** Every transition, oldest first, with every manifest they installed (for verifyHistory). */
  history(): HistoryResponse {
    const entries = this.#entries();
    const manifests: Record<string, Manifest> = {};
    for (const e of entries) {
      const m = this.#o.store.get<Manifest>('manifests', e.manifestHash);
      if (m !== undefined) manifests[e.manifestHash] = m;
    }
    return { entries: entries as HistoryResponse['entries'], manifests };
  }

  /**
   * Re-verifies the stored history: the hash chain, every manifest's canonical hash and every
   * update's owner approvals, and that the state points at its head. Run at start-up, so state
   * rewritten behind the coordinator's back is detected before it serves anything.
   */
  async verifyHistory(): Promise<string> {
    const entries = this.#entries();
    const manifests = Object.fromEntries(this.#o.store.list<Manifest>('manifests'));
    const v = await boundary(() => verifyHistory(entries, { manifests }));
    const st = this.#state();
    if ((st?.head ?? ZERO_HASH) !== v.head || (st?.length ?? 0) !== v.length) {
      throw coordinatorError(
        'COORDINATOR_HISTORY_BROKEN',
        'the history head does not match the state',
      );
    }
    return v.head;
  }

  getManifest(): ManifestResponse {
    const st = this.#state();
    if (st === undefined)
      throw coordinatorError('COORDINATOR_NO_MANIFEST', 'no manifest has been set');
    const manifest = this.#o.store.get<Manifest>('manifests', st.manifestHash);
    if (manifest === undefined)
      throw coordinatorError('COORDINATOR_STATE_CORRUPT', 'manifest missing');
    return { manifest, manifestHash: st.manifestHash, seq: st.length - 1 };
  }

  /**
   * Sets (first time) or updates the manifest. Authorisation:
   * - first set (`kind: set`): a signature by the install-time owner key over the genesis
   *   transition (stops first-come-first-served takeover of a fresh coordinator);
   * - `update`: distinct owners of the *current* manifest with role `update`, at least
   *   `updates.threshold` of them; no owners means the manifest is immutable;
   * - `package-update`: only minimum SVN/TCB raised, approved per package.
   * Signatures cover the transition hash (seq, previous head, manifest hash, kind), so a
   * signature for one transition cannot be replayed onto another.
   */
  async setManifest(body: SetManifestBody): Promise<SetManifestResponse> {
    const manifest = await boundary(() => validateManifest(body.manifest));
    const hash = await boundary(() => manifestHash(manifest));
    const st = this.#state();
    const seq = st?.length ?? 0;
    const prevHash = st?.head ?? ZERO_HASH;
    const kind: TransitionKind = body.kind ?? (st === undefined ? 'set' : 'update');
    // Only the first transition is a set: a later "set" would bypass the owners' threshold.
    if ((kind === 'set') !== (st === undefined)) {
      throw coordinatorError(
        'COORDINATOR_TRANSITION_INVALID',
        st === undefined
          ? 'the first manifest is a set'
          : 'a manifest is already set: send an update',
        {
          details: {
            rule: 'kind',
            expected: st === undefined ? 'set' : 'update | package-update',
            actual: kind,
          },
        },
      );
    }
    const entryBase = { seq, prevHash, manifestHash: hash, kind };
    const th = await transitionHash(entryBase);

    // The signatures recorded in the history: only those that verified.
    let accepted: SetManifestBody['signatures'];
    if (st === undefined) {
      // First set: one valid signature by the install-time key, whatever owner name it carries.
      const message = transitionSignedBytes(th);
      const valid: typeof body.signatures = [];
      for (const sig of body.signatures) {
        try {
          await verifyOwnerSignature(sig, message, this.#o.ownerKeyPem);
          valid.push(sig);
        } catch {
          // counted below
        }
      }
      if (valid.length === 0) {
        throw coordinatorError(
          'COORDINATOR_SIGNATURE_INVALID',
          'the first manifest must be signed by the owner key the coordinator was started with',
          {
            details: {
              rule: 'owner.install',
              expected: `a signature over transition ${th}`,
              actual: `${body.signatures.length} signature(s), none valid`,
            },
          },
        );
      }
      accepted = valid;
    } else {
      const current = this.getManifest().manifest;
      if (Object.keys(current.owners ?? {}).length === 0) {
        throw coordinatorError(
          'COORDINATOR_MANIFEST_IMMUTABLE',
          'the current manifest has no owners',
          {
            details: { rule: 'owners', expected: 'at least one owner', actual: 0 },
          },
        );
      }
      // Every signature given must verify (a bad one is refused, not ignored), so all of them
      // are recorded.
      await boundary(() =>
        verifyTransitionApproval(current, manifest, { ...entryBase, signatures: body.signatures }),
      );
      accepted = body.signatures;
    }

    // Generate secrets whose definition is new or changed; keep the rest (so an update that
    // does not touch a secret does not rotate it). Which rows to keep is decided again inside
    // the transaction (nextSecretRows), from the rows as they are then.
    const now = this.#now();
    const existing = new Map(this.#o.store.list<StoredSecret>('secrets'));
    const generated = new Map<string, StoredSecret>();
    for (const [name, def] of Object.entries(manifest.secrets ?? {})) {
      if (existing.get(name)?.definition === secretDefinitionKey(def) || def.perInstance === true)
        continue;
      generated.set(name, await generateSecret(def, this.#o.root, now));
    }
    const inter = await createIntermediateCa(this.#o.root, manifest.trustDomain, hash, now);

    const entry: HistoryEntry = {
      ...entryBase,
      signatures: accepted,
      at: now.toISOString(),
    };
    this.#o.store.transaction(() => {
      // Compare-and-swap on the head: of two updates signed against the same head, one wins.
      const cur = this.#state();
      if ((cur?.head ?? ZERO_HASH) !== prevHash) {
        throw coordinatorError(
          'COORDINATOR_HISTORY_CONFLICT',
          'the history moved while this update was checked',
          {
            details: { rule: 'history.head', expected: prevHash, actual: cur?.head ?? ZERO_HASH },
          },
        );
      }
      this.#o.store.put('manifests', hash, manifest);
      this.#o.store.put('intermediates', hash, inter.stored);
      this.#o.store.put('history', String(seq).padStart(12, '0'), entry);
      // Re-read: an owner's upload may have committed while this update was checked, and
      // writing the rows read before would silently undo it (and free its version for replay).
      const rows = new Map(this.#o.store.list<StoredSecret>('secrets'));
      const nextSecrets = nextSecretRows(manifest, rows, generated);
      for (const name of rows.keys())
        if (!nextSecrets.has(name)) this.#o.store.delete('secrets', name);
      for (const [name, s] of nextSecrets) this.#o.store.put('secrets', name, s);
      this.#o.store.put('meta', 'state', {
        manifestHash: hash,
        head: th,
        length: seq + 1,
      } satisfies State);
    });
    this.#current = undefined;
    this.#o.metrics.manifestUpdates.inc();
    this.#o.logger.info({ manifestHash: hash, seq, kind }, 'manifest transition accepted');
    return { manifestHash: hash, seq, transitionHash: th };
  }

  /**
   * Uploads a user-defined secret. Needs valid signatures of owners holding role
   * `secrets:<name>` over `secretDigest(root CA, name, version, value)`; `version` must be the
   * stored version plus one, so a captured upload cannot be replayed to roll the secret back,
   * and the root CA pins the signature to this deployment.
   */
  async putSecret(name: string, body: PutSecretBody): Promise<SetSecretResponse> {
    const { manifest, manifestHash: checkedHash } = this.getManifest();
    const def = Object.hasOwn(manifest.secrets ?? {}, name) ? manifest.secrets?.[name] : undefined;
    if (def === undefined)
      throw coordinatorError('COORDINATOR_NOT_FOUND', `the manifest declares no secret ${name}`);
    if (def.userDefined !== true || def.type === 'cert-ecdsa' || def.perInstance === true) {
      throw coordinatorError(
        'COORDINATOR_SECRET_NOT_USER_DEFINED',
        `secret ${name} is not user-defined`,
        {
          details: { rule: 'userDefined', expected: true, actual: def.userDefined ?? false },
        },
      );
    }
    const value = fromB64u(body.value);
    if (
      def.type === 'symmetric'
        ? value.length !== def.bits / 8
        : value.length === 0 || value.length > (def.maxBytes ?? 1_048_576)
    ) {
      throw coordinatorError('COORDINATOR_SECRET_INVALID', `secret ${name} has the wrong size`, {
        details: {
          rule: 'secret.size',
          expected: def.type === 'symmetric' ? def.bits / 8 : `1..${def.maxBytes ?? 1_048_576}`,
          actual: value.length,
        },
      });
    }
    const expectedVersion = nextSecretVersion(this.#o.store.get<StoredSecret>('secrets', name));
    if (body.version !== expectedVersion) {
      throw coordinatorError(
        'COORDINATOR_HISTORY_CONFLICT',
        `the next version of secret ${name} is ${expectedVersion}`,
        {
          details: { rule: 'version', expected: expectedVersion, actual: body.version },
        },
      );
    }
    const digest = await secretDigest({
      rootCaDer: new Uint8Array(this.#o.root.cert.rawData),
      name,
      version: body.version,
      value,
    });
    const role = `secrets:${name}`;
    await boundary(() =>
      verifyOwnerApprovals(
        manifest.owners ?? {},
        [body.signature],
        ownerSignedBytes('secret', digest),
        {
          threshold: 1,
          eligible: (roles) => roles.includes(role),
        },
      ),
    );
    this.#o.store.transaction(() => {
      // The definition, the size and the signer's role were checked against this manifest: an
      // update that landed meanwhile may have redefined the secret or revoked the signer.
      const state = this.#state();
      if (state?.manifestHash !== checkedHash) {
        throw coordinatorError(
          'COORDINATOR_HISTORY_CONFLICT',
          'the manifest changed while this upload was checked; retry',
          {
            details: { rule: 'manifest', expected: checkedHash, actual: state?.manifestHash },
          },
        );
      }
      const cur = this.#o.store.get<StoredSecret>('secrets', name);
      if (nextSecretVersion(cur) !== body.version) {
        throw coordinatorError(
          'COORDINATOR_HISTORY_CONFLICT',
          'the secret changed while this upload was checked',
          {
            details: { rule: 'version', expected: nextSecretVersion(cur), actual: body.version },
          },
        );
      }
      this.#o.store.put('secrets', name, {
        definition: cur?.definition ?? secretDefinitionKey(def),
        value: { type: 'bytes', value: b64u(value) },
        version: body.version,
      } satisfies StoredSecret);
    });
    this.#o.logger.info({ secret: name, version: body.version }, 'user-defined secret uploaded');
    return { name, version: body.version };
  }

  // ---------------------------------------------------------------- activation

  /**
   * Activates (or renews) one workload instance. The order matters:
   * 1. the nonce is consumed first, so each nonce is tried at most once (replay);
   * 2. sim evidence is refused before verification unless both opt-ins are present;
   * 3. evidence is verified by its TEE's verifier (signatures, chain, collateral, TCB);
   * 4. the report data must bind this nonce and this agent key (relay, key substitution);
   * 5. the claims are appraised against the workload's package (wrong code, debug, old SVN);
   * 6. a renewal must be signed by the instance's current mesh key (a sibling taking over an
   *    instance whose id it learned), checked again in the commit;
   * 7. the instance limit is enforced in the same transaction that records the instance.
   */
  async activate(body: ActivateBody): Promise<ActivateResponse> {
    const started = process.hrtime.bigint();
    const now = this.#now();
    try {
      const out = await boundary(() => this.#activate(body, now));
      this.#o.metrics.activations.inc({ workload: body.workload, result: 'ok' });
      return out;
    } catch (e) {
      // The name is the unauthenticated caller's: only a workload of the manifest becomes a
      // label, or each request could add a time series, growing memory and /metrics unbounded.
      const known =
        this.#current !== undefined &&
        Object.hasOwn(this.#current.manifest.workloads, body.workload);
      this.#o.metrics.activations.inc({
        workload: known ? body.workload : '(unknown)',
        result: 'refused',
      });
      this.#o.metrics.refusals.inc({ code: isCloisterError(e) ? e.code : 'INTERNAL' });
      throw e;
    } finally {
      this.#o.metrics.activationSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  async #activate(body: ActivateBody, now: Date): Promise<ActivateResponse> {
    const cur = await this.#currentManifest();
    const nonce = nonceFromBase64Url(body.nonce);
    // Synchronous and first: each nonce is tried at most once, whatever happens next.
    this.#o.nonces.consume(body.nonce, now);

    const workload = Object.hasOwn(cur.manifest.workloads, body.workload)
      ? cur.manifest.workloads[body.workload]
      : undefined;
    if (workload === undefined) {
      throw coordinatorError('COORDINATOR_UNKNOWN_WORKLOAD', `no workload ${body.workload}`, {
        details: {
          rule: 'workload',
          expected: Object.keys(cur.manifest.workloads),
          actual: body.workload,
        },
      });
    }
    const pkg = cur.manifest.packages[workload.package];
    if (pkg === undefined)
      throw coordinatorError('COORDINATOR_STATE_CORRUPT', 'workload package missing');
    // Simulation evidence is signed by a software key anyone can hold: it is acceptable only
    // when the manifest owner AND the operator both opted in (a production manifest or a
    // production coordinator alone never accepts it).
    const simAllowed = cur.manifest.policy?.allowSimulation === true && this.#o.simulation;
    if (body.evidence.type === 'sim' && !simAllowed) {
      throw coordinatorError(
        'COORDINATOR_SIMULATION_REFUSED',
        'simulation evidence is not allowed',
        {
          details: {
            rule: 'policy.allowSimulation',
            expected: 'manifest policy.allowSimulation and coordinator --simulation',
            actual: {
              manifest: cur.manifest.policy?.allowSimulation === true,
              coordinator: this.#o.simulation,
            },
          },
        },
      );
    }

    if (body.evidence.type !== pkg.tee) {
      throw coordinatorError(
        'COORDINATOR_TEE_MISMATCH',
        `package ${workload.package} is ${pkg.tee}`,
        {
          details: { rule: 'package.tee', expected: pkg.tee, actual: body.evidence.type },
        },
      );
    }
    // The agent's two keys: its P-256 certificate key (strict SPKI, on the curve) and its X25519
    // bundle key. The `publicKey` form needs no proof of possession beyond the binding below:
    // the bundle (certificate included) is sealed to the bundle key that the same evidence
    // binds, so only the holder of both can use the certificate.
    const spki = 'csr' in body ? await spkiFromCsr(body.csr) : agentSpki(fromB64u(body.publicKey));
    const bundleKey = fromB64u(body.bundleKey);
    // Agreed now, so that an unusable bundle key is refused before anything is committed.
    const sealer = bundleSealer(bundleKey);
    const evidence: EvidenceInput = {
      type: body.evidence.type,
      data: fromB64u(body.evidence.data),
      certs: (body.evidence.certs ?? []).map(fromB64u),
      ...(body.evidence.aux === undefined ? {} : { aux: fromB64u(body.evidence.aux) }),
    };
    const verified: VerifiedEvidence = await this.#o.verifier.verify(evidence, now);

    // Binding: stops replay of evidence made for another nonce and relay of evidence made for
    // other keys (the bundle is sealed to the bundle key the evidence vouches for).
    const reportData = await activationReportData(nonce, spki, bundleKey);
    const expected = hex(reportData);
    if (verified.claims.reportData.toLowerCase() !== expected) {
      throw coordinatorError(
        'COORDINATOR_BINDING_MISMATCH',
        'report data does not bind the nonce and agent keys',
        {
          details: { rule: 'reportData', expected, actual: verified.claims.reportData },
        },
      );
    }

    const appraisal = appraise(verified, pkg, `cloister/manifest/${cur.hash}`);
    const failure = appraisal.failures[0];
    if (failure !== undefined) {
      throw coordinatorError(
        'COORDINATOR_APPRAISAL_FAILED',
        `${failure.rule} does not match the package`,
        {
          details: {
            rule: failure.rule,
            expected: failure.expected,
            actual: failure.actual,
            failures: appraisal.failures.map(({ rule, expected: e, actual: a }) => ({
              rule,
              expected: e,
              actual: a,
            })),
          },
        },
      );
    }

    // Renewal keeps the instance (and its per-instance secrets); anything else is new.
    let prior: InstanceRecord | undefined;
    if ('instanceId' in body) {
      prior = this.#o.store.get<InstanceRecord>('instances', body.instanceId);
      if (prior === undefined || prior.workload !== body.workload) {
        throw coordinatorError(
          'COORDINATOR_NOT_FOUND',
          'no such instance of this workload: unknown, released or expired past retention',
          {
            details: {
              rule: 'instanceId',
              expected: 'an instance of this workload',
              actual: body.instanceId,
            },
          },
        );
      }
      // Attested siblings of a workload run the same code, and the id is in the instance's
      // certificate that every mesh peer sees: without this, any of them could renew another
      // instance, take its per-instance secrets and replace its key. Only the holder of the
      // instance's current mesh key renews it; the signature covers this nonce and the report
      // data, so it cannot be moved onto a request for other keys.
      checkInstanceSignature(
        'renewal',
        prior.meshSpki,
        renewalSignedBytes(prior.id, body.nonce, reportData),
        body.instanceSignature,
      );
    }

    // Image workloads: the keys of the pinned image's layers, for an agent that proved it runs
    // this workload's package (appraised above), before anything is committed.
    const layerKeys =
      body.image === undefined
        ? undefined
        : await releaseImageKeys(workload.image, body.image, this.#o.imageKey);

    const instanceId = prior?.id ?? newInstanceId(now);
    const perInstance: Record<string, StoredSecret> = { ...(prior?.perInstance ?? {}) };
    for (const [name, def] of Object.entries(cur.manifest.secrets ?? {})) {
      const own = Object.hasOwn(perInstance, name) ? perInstance[name] : undefined;
      if (def.perInstance === true && own?.definition !== secretDefinitionKey(def)) {
        perInstance[name] = await generateSecret(def, this.#o.root, now);
      }
    }

    // The mesh key is the agent's attested key, unless a template hands the key itself to the
    // app (`.mesh.key`): then the coordinator generates it and ships it inside the JWE.
    const paths = workloadTemplatePaths(cur.manifest, body.workload);
    let meshKeyPkcs8: Uint8Array | undefined;
    let meshSpki = spki;
    if (paths.has('.mesh.key')) {
      const kp = await generateP256();
      meshKeyPkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', kp.privateKey));
      meshSpki = await spkiDer(kp.publicKey);
    }
    const leaf = await issueLeaf(cur.intermediate, {
      spkiDer: meshSpki,
      trustDomain: cur.manifest.trustDomain,
      workload: body.workload,
      dnsNames: leafDnsNames(body.workload, workload.mesh?.ingress ?? []),
      instanceId,
      validityMs: this.#o.leafValidityMs,
      now,
    });

    const secrets: Record<string, SecretValue | null> = {};
    const stored = new Map(this.#o.store.list<StoredSecret>('secrets'));
    for (const name of Object.keys(cur.manifest.secrets ?? {})) {
      // Own properties only: a secret named `toString` is not Object.prototype's.
      const own = Object.hasOwn(perInstance, name) ? perInstance[name] : undefined;
      secrets[name] = secretValueOf(own ?? stored.get(name));
    }
    const rootDer = this.#rootDer;
    const interDer = cur.intermediateDer;
    const rendered = renderWorkload(cur.manifest, body.workload, {
      secrets,
      mesh: {
        cert: leaf.der,
        ...(meshKeyPkcs8 === undefined ? {} : { key: meshKeyPkcs8 }),
        rootCa: rootDer,
        intermediateCa: interDer,
      },
      workload: { name: body.workload },
      instance: { id: instanceId },
    });

    const record: InstanceRecord = {
      id: instanceId,
      workload: body.workload,
      serial: leaf.serial,
      notAfter: leaf.notAfter.toISOString(),
      manifestHash: cur.hash,
      activations: (prior?.activations ?? 0) + 1,
      perInstance,
      meshSpki: b64u(meshSpki),
    };
    let undo: LiveUndo | undefined;
    const committed = this.#o.store.commit(() => {
      const state = this.#state();
      if (state?.manifestHash !== cur.hash) {
        throw coordinatorError(
          'COORDINATOR_HISTORY_CONFLICT',
          'the manifest changed during activation; retry',
          {
            details: { rule: 'manifest', expected: cur.hash, actual: state?.manifestHash },
          },
        );
      }
      if (prior !== undefined) {
        const again = this.#o.store.get<InstanceRecord>('instances', instanceId);
        if (again === undefined) {
          // Released, or purged (expired past retention), while this renewal was verified: it
          // does not come back.
          throw coordinatorError(
            'COORDINATOR_NOT_FOUND',
            'the instance was released or expired past retention',
            {
              details: { rule: 'instanceId', expected: 'a recorded instance', actual: instanceId },
            },
          );
        }
        // Renewed by another request meanwhile (a new key): the key this renewal was signed
        // with no longer speaks for the instance, and the other renewal's record stays.
        if (again.meshSpki !== prior.meshSpki) {
          throw coordinatorError('COORDINATOR_HISTORY_CONFLICT', 'the instance changed; retry', {
            details: { rule: 'instance.key', expected: 'unchanged', actual: 'renewed' },
          });
        }
      }
      const max = workload.maxInstances;
      // Renewing a still-live instance keeps its slot; anything else takes a new one. The
      // in-memory index is exact here: commit callbacks run one after the other.
      const takesSlot = this.#live.expiry(body.workload, instanceId, now.getTime()) === undefined;
      const live = this.#live.count(body.workload, now.getTime());
      if (max !== undefined && takesSlot && live >= max) {
        throw coordinatorError(
          'COORDINATOR_TOO_MANY_INSTANCES',
          `workload ${body.workload} has ${live} live instances`,
          {
            details: { rule: 'maxInstances', expected: `< ${max}`, actual: live },
          },
        );
      }
      this.#o.store.put('instances', instanceId, record, {
        grp: body.workload,
        exp: leaf.notAfter.getTime(),
      });
      undo = this.#live.set(body.workload, instanceId, leaf.notAfter.getTime());
    });
    try {
      await committed;
    } catch (e) {
      // The shared commit failed after this callback ran: nothing was stored, so forget it.
      if (undo !== undefined) this.#live.restore(undo);
      throw e;
    }

    // Renew at two thirds of the lifetime: early enough to survive a coordinator outage of a
    // third of the validity, late enough not to re-attest needlessly.
    const lifetime = leaf.notAfter.getTime() - now.getTime();
    const bundle = sealer.seal({
      files: Object.fromEntries(Object.entries(rendered.files).map(([k, v]) => [k, b64u(v)])),
      env: rendered.env,
      args: rendered.args,
      mesh: {
        cert: leaf.pem,
        ...(meshKeyPkcs8 === undefined ? {} : { key: toPem('PRIVATE KEY', meshKeyPkcs8) }),
        rootCa: this.#rootPem,
        intermediateCa: cur.intermediatePem,
      },
      renewAfter: new Date(now.getTime() + Math.floor((lifetime * 2) / 3)).toISOString(),
      ...(layerKeys === undefined ? {} : { layerKeys }),
    });
    this.#o.logger.info(
      { workload: body.workload, instanceId, serial: leaf.serial },
      'instance activated',
    );
    return {
      bundle,
      certificate: `${leaf.pem}\n${cur.intermediatePem}\n`,
      expiresAt: leaf.notAfter.toISOString(),
      instanceId,
    };
  }

  /** The public key image layers are wrapped to (fetch it over TLS pinned to the root). */
  imageKey(): ImageKeyResponse {
    return { publicKey: this.#o.imageKey.publicKeyPem };
  }

  // ---------------------------------------------------------------- attestation and status

  /** The coordinator's own evidence bound to `nonce`, its root CA, history head and TLS key. */
  async attest(nonceText: string): Promise<AttestResponse> {
    const nonce = await boundary(() => nonceFromBase64Url(nonceText));
    // Head, history and manifest are read together, before anything is awaited (the current
    // manifest is picked before its first await too): an update that lands while the evidence
    // is made must not put its history and manifest next to evidence bound to the head before
    // it, which clients rightly refuse.
    const st = this.#state();
    const head = st?.head ?? ZERO_HASH;
    const entries = this.#entries();
    const cur = st === undefined ? undefined : await this.#currentManifest();
    const rootDer = new Uint8Array(this.#o.root.cert.rawData);
    const rd = await coordinatorReportData(
      nonce,
      rootDer,
      new Uint8Array(Buffer.from(head, 'hex')),
      this.#o.tlsSpkiDer,
    );
    const ev = await this.#o.attester.evidence(rd);
    return {
      evidence: { type: ev.type, data: b64u(ev.data) },
      rootCa: this.#rootPem,
      manifest: cur?.manifest ?? null,
      manifestHash: cur?.hash ?? null,
      intermediateCa: cur?.intermediatePem ?? null,
      historyHead: head,
      history: entries as AttestResponse['history'],
      tlsSpki: b64u(this.#o.tlsSpkiDer),
    };
  }

  // ---------------------------------------------------------------- release

  /**
   * Releases an instance (its agent exits cleanly), freeing its `maxInstances` slot. The
   * request must be signed with the instance's current mesh key over
   * `releaseSignedBytes(instanceId, nonce)` for a fresh challenge nonce: only the holder of
   * that key (the attested agent, or an app given `.mesh.key`) can release it, and a captured
   * request cannot be replayed (the nonce is one-time). Knowing an instance id is not enough.
   */
  async releaseInstance(
    id: string,
    body: ReleaseInstanceRequest,
  ): Promise<ReleaseInstanceResponse> {
    const now = this.#now();
    await boundary(() => nonceFromBase64Url(body.nonce));
    this.#o.nonces.consume(body.nonce, now);
    const rec = this.#o.store.get<InstanceRecord>('instances', id);
    if (rec === undefined || rec.meshSpki === undefined) {
      throw coordinatorError('COORDINATOR_NOT_FOUND', 'no releasable instance with that id', {
        details: { rule: 'instanceId', expected: 'a recorded instance', actual: id },
      });
    }
    checkInstanceSignature(
      'release',
      rec.meshSpki,
      releaseSignedBytes(id, body.nonce),
      body.signature,
    );
    let undo: LiveUndo | undefined;
    try {
      await this.#o.store.commit(() => {
        // Renewed (new key) while this was checked: the old key no longer speaks for it.
        const again = this.#o.store.get<InstanceRecord>('instances', id);
        if (again?.meshSpki !== rec.meshSpki) {
          throw coordinatorError('COORDINATOR_HISTORY_CONFLICT', 'the instance changed; retry', {
            details: { rule: 'instance.key', expected: 'unchanged', actual: 'renewed or gone' },
          });
        }
        this.#o.store.delete('instances', id);
        undo = this.#live.delete(rec.workload, id);
      });
    } catch (e) {
      if (undo !== undefined) this.#live.restore(undo);
      throw e;
    }
    this.#o.logger.info({ workload: rec.workload, instanceId: id }, 'instance released');
    return { instanceId: id, released: true };
  }

  // ---------------------------------------------------------------- retention

  /**
   * Deletes the instances whose certificate expired more than `instanceRetentionMs` ago. Only
   * a release deletes an instance otherwise, and an agent that died never sends one, so without
   * this the store grows with every pod that ever ran. Until then an expired instance can still
   * renew with its per-instance secrets; after it, a renewal gets COORDINATOR_NOT_FOUND.
   *
   * Each batch (at most `batchSize` rows) is one group commit: it has the store's durability
   * and runs in its own savepoint, never inside an activation's. The next batch waits for a
   * later turn of the event loop, so activations are served between batches. With `signal`
   * aborted (the coordinator is closing) no further batch starts. The live-instance index is
   * untouched: it holds no instance that expired. Resolves to the number deleted.
   */
  async purgeExpiredInstances(
    opts: { readonly signal?: AbortSignal; readonly batchSize?: number } = {},
  ): Promise<number> {
    const batchSize = opts.batchSize ?? INSTANCE_PURGE_BATCH;
    const before = this.#now().getTime() - this.#o.instanceRetentionMs;
    let purged = 0;
    while (opts.signal?.aborted !== true) {
      const n = await this.#o.store.commit(() =>
        this.#o.store.purgeExpired('instances', before, batchSize),
      );
      purged += n;
      this.#o.metrics.instancesPurged.inc(n);
      if (n < batchSize) break;
      await nextTurn();
    }
    if (purged > 0) {
      this.#o.logger.info(
        { purged, expiredBefore: new Date(before).toISOString() },
        'instances expired past retention purged',
      );
    }
    return purged;
  }

  /** Live instances per workload of the current manifest (for metrics and the CLI). */
  liveInstances(): Record<string, number> {
    const st = this.#state();
    const out: Record<string, number> = {};
    if (st === undefined) return out;
    const m = this.#o.store.get<Manifest>('manifests', st.manifestHash);
    const t = this.#now().getTime();
    for (const w of Object.keys(m?.workloads ?? {})) out[w] = this.#live.count(w, t);
    return out;
  }

  status(): StatusResponse {
    const st = this.#state();
    return {
      state: st === undefined ? 'accepting-manifest' : 'ready',
      version: this.#o.version ?? '0.1.0',
      tee: this.#o.attester.type,
      manifestHash: st?.manifestHash ?? null,
      historyHead: st?.head ?? ZERO_HASH,
      ...(st === undefined ? {} : { instances: this.liveInstances() }),
    };
  }
}
