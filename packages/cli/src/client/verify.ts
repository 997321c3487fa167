/**
 * Remote verification of a coordinator (DESIGN §3 "Verify", report-data layout in
 * @cloister/protocol binding.ts). In order, each step closing one attack:
 *
 * 1. A fresh 32-byte nonce goes to `POST /v1/attest`: stops replay of old evidence.
 * 2. The evidence is verified to its vendor root (sim: the pinned sim root, and only with an
 *    explicit opt-in): stops forged evidence.
 * 3. It is appraised against the reference values of this release's coordinator, computed
 *    locally (never downloaded at verify time): stops a modified coordinator.
 * 4. The history the coordinator sends is verified as a hash chain, and the report data must
 *    equal `coordinatorReportData(nonce, root CA, history head, TLS SPKI)`: stops a relay from
 *    pairing genuine evidence with another root, another history or another TLS key.
 * 5. The TLS key of every connection used must be the attested one: stops a machine in the
 *    middle (the connection was not verified during the handshake, so this check is what makes
 *    the answers trustworthy).
 * 6. The current manifest must be the history's last one, the full history (with manifests,
 *    when served) must end at the attested head, and with `expectedManifest` the canonical
 *    hashes must match (whitespace and key order do not matter).
 *
 * Any failure throws a typed error with `details` {rule, expected, actual}; nothing is saved.
 */
import { X509Certificate } from 'node:crypto';
import { isCloisterError } from '@cloister/errors';
import {
  appraise,
  bytesEqual,
  trustAnchor,
  verifyEvidence,
  verifySimReport,
} from '@cloister/evidence';
import type { Claims, ReferenceValues, VerifiedEvidence } from '@cloister/evidence';
import {
  coordinatorReportData,
  fromBase64Url,
  fromHex,
  fromPem,
  manifestHash,
  newNonce,
  toHex,
  transitionHash,
  transitionSignedBytes,
  verifyHistory,
  verifyOwnerSignature,
  ZERO_HASH,
} from '@cloister/protocol';
import type { AttestResponse, EvidenceType, HistoryEntry, Manifest } from '@cloister/protocol';
import { CoordinatorApi } from './api.js';
import { clientError } from './error-codes.js';
import { sha256Hex } from './http.js';
import { releaseCoordinatorReference } from './reference.js';

export interface VerifyCoordinatorOptions {
  /** `https://host:port`. */
  readonly url: string;
  /**
   * Reference values of the coordinator this client trusts, or a function giving them for the
   * evidence type the coordinator presents (default: this release's, `releaseCoordinatorReference`).
   */
  readonly reference?: ReferenceValues | ((tee: EvidenceType) => Promise<ReferenceValues>);
  /** Accept simulation evidence (development only). */
  readonly allowSimulation?: boolean;
  /** PEM of the sim root certificate to pin (required with simulation evidence). */
  readonly simRootPem?: string;
  /** The manifest the caller expects the coordinator to enforce. */
  readonly expectedManifest?: Manifest;
  /**
   * A history this client saw before: the attested history must extend it (as long or longer,
   * with the same transition at its last position), else VERIFY_HISTORY_ROLLBACK.
   */
  readonly knownHistory?: KnownHistory;
  /**
   * PEM of the owner key the coordinator was installed with (`cloister coordinator
   * --owner-key`): the first manifest of the history must carry its signature, else
   * VERIFY_OWNER_MISMATCH. Later transitions are checked against each manifest's owners.
   */
  readonly ownerKeyPem?: string;
  readonly now?: Date;
  readonly timeoutMs?: number;
}

/** How far a client has seen a coordinator's history: its length and its head (hex). */
export interface KnownHistory {
  readonly length: number;
  readonly head: string;
}

/**
 * Throws VERIFY_HISTORY_ROLLBACK unless the verified chain `entries` (head `head`) extends
 * `known`. Entry i + 1's prevHash is entry i's hash, so the hash at `known.length` is read off
 * the chain. Stops a host from restoring an older coordinator state (say, a manifest from
 * before a package update raised the minimum SVN) unnoticed by a client that saw the newer one.
 */
function checkExtends(entries: readonly HistoryEntry[], head: string, known: KnownHistory): void {
  if (entries.length < known.length) {
    throw clientError(
      'VERIFY_HISTORY_ROLLBACK',
      `the coordinator's history has ${entries.length} transition(s); ${known.length} were seen before`,
      {
        details: {
          rule: 'history.rollback',
          expected: `at least ${known.length} transitions, head ${known.head} at ${known.length}`,
          actual: entries.length,
        },
      },
    );
  }
  const at =
    known.length === 0
      ? ZERO_HASH
      : known.length === entries.length
        ? head
        : (entries[known.length] as HistoryEntry).prevHash;
  if (at !== known.head) {
    throw clientError(
      'VERIFY_HISTORY_ROLLBACK',
      `the coordinator's history forks from the one seen before at transition ${known.length}`,
      { details: { rule: 'history.fork', expected: known.head, actual: at } },
    );
  }
}

/**
 * Throws VERIFY_OWNER_MISMATCH unless the first transition of the verified chain `entries`
 * carries a valid signature by `ownerKeyPem` over its transition hash. The chain is bound to
 * the evidence through its head, so this ties the whole manifest history to the key the client
 * trusts: a coordinator installed by someone else (with their own owner key and manifest) is
 * refused even when the client does not pin the manifest itself.
 */
async function checkFirstSetBy(
  entries: readonly HistoryEntry[],
  ownerKeyPem: string,
): Promise<void> {
  const first = entries[0];
  if (first === undefined) return;
  const message = transitionSignedBytes(await transitionHash(first));
  for (const sig of first.signatures) {
    try {
      await verifyOwnerSignature(sig, message, ownerKeyPem);
      return;
    } catch {
      // another owner's signature, or not a valid one: try the next
    }
  }
  throw clientError(
    'VERIFY_OWNER_MISMATCH',
    'the first manifest was not signed by the given owner key',
    {
      details: {
        rule: 'history.owner',
        expected: 'a signature by --owner-key over transition 0',
        actual: first.signatures.map((s) => s.owner),
      },
    },
  );
}

/** The verified facts about a coordinator. */
export interface VerifiedCoordinator {
  readonly verdict: 'verified';
  readonly tee: Claims['tee'];
  readonly simulation: boolean;
  /** The coordinator's measurement (hex), as the evidence states it. */
  readonly measurement: string;
  readonly manifestHash: string | null;
  readonly historyLength: number;
  readonly historyHead: string;
  readonly rootCaPem: string;
  /** SHA-256 of the root CA DER, colon-separated uppercase hex. */
  readonly rootCaFingerprint: string;
  readonly manifest: Manifest | null;
  readonly claims: Claims;
}

function measurementOf(c: Claims): string {
  switch (c.tee) {
    case 'sim':
    case 'sev-snp':
      return c.measurement;
    case 'sgx':
      return c.mrEnclave;
    case 'tdx':
      return c.mrTd;
  }
}

async function verifyEvidenceOf(
  ev: AttestResponse['evidence'],
  o: VerifyCoordinatorOptions,
  now: Date,
): Promise<VerifiedEvidence> {
  const data = fromBase64Url(ev.data, 'evidence.data');
  switch (ev.type) {
    case 'sim': {
      // The sim root is a key anyone can make: accepting it without an explicit opt-in would let
      // anyone impersonate an attested coordinator.
      if (o.allowSimulation !== true) {
        throw clientError(
          'VERIFY_SIMULATION_REFUSED',
          'the coordinator runs on the simulation TEE; pass --allow-simulation for development only',
          { details: { rule: 'allowSimulation', expected: false, actual: 'sim' } },
        );
      }
      if (o.simRootPem === undefined) {
        throw clientError(
          'VERIFY_SIMULATION_REFUSED',
          'simulation evidence needs a pinned sim root (--sim-root DIR)',
          {
            details: { rule: 'simRoot', expected: 'a pinned sim root', actual: null },
          },
        );
      }
      const root = trustAnchor('sim root', fromPem(o.simRootPem, 'CERTIFICATE', 'sim root'));
      return { claims: await verifySimReport(data, { now, roots: [root], allowSimulation: true }) };
    }
    case 'sgx':
    case 'tdx':
    case 'sev-snp':
      return verifyEvidence(ev.type, data, {
        now,
        certs: (ev.certs ?? []).map((c, i) => fromBase64Url(c, `evidence.certs[${i}]`)),
      });
    case 'tpm':
    case 'azure-cvm':
      throw clientError(
        'VERIFY_EVIDENCE_UNSUPPORTED',
        `${ev.type} evidence of a coordinator is not supported`,
        {
          details: { rule: 'evidence.type', actual: ev.type },
        },
      );
  }
}

/** Attests and checks a coordinator; throws a typed error on any mismatch. */
export async function verifyCoordinator(o: VerifyCoordinatorOptions): Promise<VerifiedCoordinator> {
  const now = o.now ?? new Date();
  const api = new CoordinatorApi({
    url: o.url,
    ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
  });
  try {
    const nonce = newNonce();
    const res = await api.attest(nonce);

    // 2-3: evidence and reference values.
    const verified = await verifyEvidenceOf(res.evidence, o, now);
    const ref = o.reference ?? releaseCoordinatorReference;
    const reference = typeof ref === 'function' ? await ref(res.evidence.type) : ref;
    const appraisal = appraise(verified, reference, 'cloister/coordinator-release');
    const failed = appraisal.failures[0];
    if (failed !== undefined) {
      throw clientError(
        'VERIFY_MEASUREMENT_MISMATCH',
        `the coordinator is not this release's coordinator: ${failed.rule} differs`,
        { details: { rule: failed.rule, expected: failed.expected, actual: failed.actual } },
      );
    }

    // 4: history chain and binding.
    let history;
    try {
      history = await verifyHistory(res.history);
    } catch (cause) {
      throw clientError(
        'VERIFY_HISTORY_MISMATCH',
        'the history the coordinator sent is not a valid hash chain',
        {
          cause,
          details: {
            rule: 'history.chain',
            ...(isCloisterError(cause) ? { reason: cause.code } : {}),
          },
        },
      );
    }
    let rootCaDer: Uint8Array;
    let rootCa: X509Certificate;
    try {
      rootCaDer = fromPem(res.rootCa, 'CERTIFICATE', 'rootCa');
      rootCa = new X509Certificate(rootCaDer);
    } catch (cause) {
      throw clientError(
        'CLIENT_BAD_RESPONSE',
        'the root CA the coordinator sent is not a certificate',
        { cause },
      );
    }
    const tlsSpki = fromBase64Url(res.tlsSpki, 'tlsSpki');
    const expectedRd = await coordinatorReportData(
      nonce,
      rootCaDer,
      fromHex(history.head, 'head'),
      tlsSpki,
    );
    if (verified.claims.reportData.toLowerCase() !== toHex(expectedRd)) {
      throw clientError(
        'VERIFY_BINDING_MISMATCH',
        'the evidence does not commit to this nonce, root CA, history head and TLS key',
        {
          details: {
            rule: 'reportData',
            expected: toHex(expectedRd),
            actual: verified.claims.reportData,
          },
        },
      );
    }

    // The attested history extends what this client saw before.
    if (o.knownHistory !== undefined) checkExtends(res.history, history.head, o.knownHistory);
    // ... and starts with a manifest the client's owner key set.
    if (o.ownerKeyPem !== undefined) await checkFirstSetBy(res.history, o.ownerKeyPem);

    // 6 (first half): the current manifest is the last one of the attested history.
    const last = res.history.at(-1);
    const currentHash = res.manifest === null ? null : await manifestHash(res.manifest);
    if ((last?.manifestHash ?? null) !== currentHash) {
      throw clientError(
        'VERIFY_HISTORY_MISMATCH',
        'the current manifest is not the last one of the history',
        {
          details: {
            rule: 'manifest.current',
            expected: last?.manifestHash ?? null,
            actual: currentHash,
          },
        },
      );
    }
    // The full history with every manifest (owner approvals checked), read over the same
    // attested channel and required to end at the attested head.
    if (res.history.length > 0) {
      const full = await api.history();
      let fullHead: string;
      try {
        fullHead = (
          await verifyHistory(
            full.entries,
            full.manifests === undefined ? {} : { manifests: full.manifests },
          )
        ).head;
      } catch (cause) {
        throw clientError('VERIFY_HISTORY_MISMATCH', 'the full manifest history does not verify', {
          cause,
          details: {
            rule: 'history.full',
            ...(isCloisterError(cause) ? { reason: cause.code } : {}),
          },
        });
      }
      if (fullHead !== history.head) {
        throw clientError(
          'VERIFY_HISTORY_MISMATCH',
          'the full history does not end at the attested head',
          {
            details: { rule: 'history.head', expected: history.head, actual: fullHead },
          },
        );
      }
    }

    // 5: every connection we read from presented the attested TLS key.
    const peers = api.transport.peers;
    const bad = peers.find((p) => !bytesEqual(p.spkiDer, tlsSpki));
    if (peers.length === 0 || bad !== undefined) {
      throw clientError(
        'VERIFY_TLS_KEY_MISMATCH',
        "the connection's TLS key is not the key the coordinator's evidence attests",
        {
          details: {
            rule: 'tls.spki',
            expected: sha256Hex(tlsSpki),
            actual: bad === undefined ? null : sha256Hex(bad.spkiDer),
          },
        },
      );
    }

    // 6 (second half): the manifest the caller expects.
    if (o.expectedManifest !== undefined) {
      const want = await manifestHash(o.expectedManifest);
      if (currentHash === null) {
        throw clientError('VERIFY_NO_MANIFEST', 'the coordinator has no manifest yet', {
          details: { rule: 'manifest', expected: want, actual: null },
        });
      }
      if (want !== currentHash) {
        throw clientError(
          'VERIFY_MANIFEST_MISMATCH',
          'the coordinator enforces a different manifest',
          {
            details: { rule: 'manifestHash', expected: want, actual: currentHash },
          },
        );
      }
    }

    return {
      verdict: 'verified',
      tee: verified.claims.tee,
      simulation: verified.claims.tee === 'sim',
      measurement: measurementOf(verified.claims),
      manifestHash: currentHash,
      historyLength: history.length,
      historyHead: history.head,
      rootCaPem: rootCa.toString(),
      rootCaFingerprint: rootCa.fingerprint256,
      manifest: res.manifest ?? null,
      claims: verified.claims,
    };
  } finally {
    await api.close();
  }
}
