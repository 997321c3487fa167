/**
 * The manifest history (DESIGN §3 "Update"): a hash chain of transitions. Each entry commits to
 * its position, its predecessor and the canonical hash of the manifest it installs:
 *
 *   transitionHash = SHA-256( "cloister/transition/v1" || 0x00 || u64be(seq)
 *                           || prevHash (32 bytes) || manifestHash (32 bytes) || kind (ASCII) )
 *
 * The first entry has seq 0 and prevHash = 32 zero bytes. The history head (bound into the
 * coordinator's report data) is the transition hash of the last entry. `at` and the signatures
 * are not part of the hash: owners sign the transition hash before the coordinator applies it.
 */
import { concatBytes, fromHex, sha256, toHex, uintBe, utf8 } from './bytes.js';
import { manifestHash } from './canonical.js';
import { protocolError } from './error-codes.js';
import type { Manifest } from './manifest/schema.js';
import { transitionSignedBytes, verifyOwnerApprovals } from './signatures.js';
import type { OwnerSignature } from './signatures.js';

/**
 * `set`: the first manifest (authorised by the install-time owner key, outside the history);
 * `update`: a new manifest approved by `updates.threshold` owners with role `update`;
 * `package-update`: only minimum SVN / TCB values raised, approved by an owner with role
 * `package:<name>` (or `update`) for each package changed.
 */
export type TransitionKind = 'set' | 'update' | 'package-update';
export const TRANSITION_KINDS: readonly TransitionKind[] = ['set', 'update', 'package-update'];
export const TRANSITION_LABEL = 'cloister/transition/v1';
export const ZERO_HASH = '0'.repeat(64);

export interface Transition {
  readonly seq: number;
  /** Lowercase hex, 32 bytes. */
  readonly prevHash: string;
  /** Lowercase hex, 32 bytes: `manifestHash()` of the installed manifest. */
  readonly manifestHash: string;
  readonly kind: TransitionKind;
}

export interface HistoryEntry extends Transition {
  readonly signatures: readonly OwnerSignature[];
  /** RFC 3339 time the coordinator applied it (informational, not hashed). */
  readonly at: string;
}

/** The transition hash (lowercase hex). */
export async function transitionHash(t: Transition): Promise<string> {
  if (!TRANSITION_KINDS.includes(t.kind)) {
    throw protocolError('HISTORY_BROKEN', `unknown transition kind "${String(t.kind)}"`);
  }
  return toHex(
    await sha256(
      concatBytes(
        utf8(TRANSITION_LABEL),
        Uint8Array.of(0),
        uintBe(t.seq, 8),
        fromHex(t.prevHash, 'prevHash'),
        fromHex(t.manifestHash, 'manifestHash'),
        utf8(t.kind),
      ),
    ),
  );
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The packages whose minimum SVN / TCB differ; throws if anything else differs or goes down. */
export function packageUpdateChanges(prev: Manifest, next: Manifest): string[] {
  const fail = (why: string): never => {
    throw protocolError('HISTORY_BROKEN', `not a package update: ${why}`);
  };
  const strip = (m: Manifest): unknown => ({
    ...m,
    packages: Object.fromEntries(
      Object.entries(m.packages).map(([k, p]) => {
        const { minSvn: _s, minTcb: _t, ...rest } = p as Record<string, unknown>;
        return [k, rest];
      }),
    ),
  });
  if (JSON.stringify(sortDeep(strip(prev))) !== JSON.stringify(sortDeep(strip(next))))
    fail('something besides minSvn / minTcb changed');
  const changed: string[] = [];
  for (const [name, p] of Object.entries(next.packages)) {
    const q = prev.packages[name] as Record<string, unknown> | undefined;
    const r = p as Record<string, unknown>;
    if (q === undefined) fail(`package ${name} is new`);
    const before = JSON.stringify(sortDeep({ s: q?.['minSvn'], t: q?.['minTcb'] }));
    const after = JSON.stringify(sortDeep({ s: r['minSvn'], t: r['minTcb'] }));
    if (before === after) continue;
    // Lowering a minimum would readmit code with known vulnerabilities: only raising is allowed.
    const qs = q?.['minSvn'];
    const rs = r['minSvn'];
    if (typeof qs === 'number' && !(typeof rs === 'number' && rs >= qs))
      fail(`${name}: minSvn lowered`);
    const qt = q?.['minTcb'];
    const rt = r['minTcb'];
    if (isObj(qt)) {
      if (!isObj(rt)) fail(`${name}: minTcb removed`);
      for (const [k, v] of Object.entries(qt)) {
        const w = (rt as Record<string, unknown>)[k];
        if (typeof v === 'number' && !(typeof w === 'number' && w >= v))
          fail(`${name}: minTcb.${k} lowered`);
      }
    }
    changed.push(name);
  }
  if (changed.length === 0) fail('nothing changed');
  return changed;
}

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (isObj(v))
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, sortDeep(v[k])]),
    );
  return v;
}

/**
 * Checks that `next` may follow `prev` under `entry`'s kind and signatures (owners and
 * thresholds of `prev`, the manifest in force when the update was signed). Throws
 * OWNER_SIGNATURE_INVALID, OWNER_THRESHOLD_NOT_MET or HISTORY_BROKEN.
 */
export async function verifyTransitionApproval(
  prev: Manifest,
  next: Manifest,
  entry: Transition & { readonly signatures: readonly OwnerSignature[] },
): Promise<string[]> {
  const message = transitionSignedBytes(await transitionHash(entry));
  const owners = prev.owners ?? {};
  switch (entry.kind) {
    case 'set':
      throw protocolError('HISTORY_BROKEN', 'only the first transition may be a set');
    case 'update':
      return verifyOwnerApprovals(owners, entry.signatures, message, {
        threshold: prev.updates?.threshold ?? 1,
        eligible: (roles) => roles.includes('update'),
      });
    case 'package-update': {
      const changed = packageUpdateChanges(prev, next);
      const approvers = await verifyOwnerApprovals(owners, entry.signatures, message, {
        threshold: 1,
        eligible: (roles) =>
          roles.includes('update') || changed.some((p) => roles.includes(`package:${p}`)),
      });
      for (const p of changed) {
        const ok = approvers.some((o) => {
          const roles = owners[o]?.roles ?? [];
          return roles.includes('update') || roles.includes(`package:${p}`);
        });
        if (!ok)
          throw protocolError('OWNER_THRESHOLD_NOT_MET', `no approval for package "${p}"`, {
            details: { package: p },
          });
      }
      return approvers;
    }
  }
}

export interface VerifiedHistory {
  /** Transition hash of the last entry, or ZERO_HASH for an empty history (hex). */
  readonly head: string;
  readonly length: number;
}

/**
 * Verifies the hash chain: seq 0,1,2..., each prevHash the transition hash of the entry before
 * (zero for the first), only the first a `set`. With `manifests` (keyed by manifest hash) it
 * also recomputes each manifest's canonical hash and checks each later transition's owner
 * approvals against the manifest before it. Throws HISTORY_BROKEN naming the entry.
 */
export async function verifyHistory(
  entries: readonly HistoryEntry[],
  options: { readonly manifests?: Readonly<Record<string, Manifest>> } = {},
): Promise<VerifiedHistory> {
  let prev = ZERO_HASH;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as HistoryEntry;
    const broken = (why: string): never => {
      throw protocolError('HISTORY_BROKEN', `history entry ${i}: ${why}`, {
        details: { index: i },
      });
    };
    if (e.seq !== i) broken(`seq is ${String(e.seq)}, expected ${i}`);
    if (e.prevHash !== prev) broken('prevHash does not match the previous transition');
    if ((e.kind === 'set') !== (i === 0)) broken('only the first transition is a set');
    if (!/^[0-9a-f]{64}$/.test(e.manifestHash)) broken('manifestHash is not 32 bytes of hex');
    const manifests = options.manifests;
    if (manifests !== undefined) {
      const m = Object.hasOwn(manifests, e.manifestHash) ? manifests[e.manifestHash] : undefined;
      if (m === undefined) broken('its manifest was not supplied');
      if ((await manifestHash(m as Manifest)) !== e.manifestHash) broken('manifest hash mismatch');
      if (i > 0) {
        const before = manifests[(entries[i - 1] as HistoryEntry).manifestHash] as Manifest;
        await verifyTransitionApproval(before, m as Manifest, e);
      }
    }
    prev = await transitionHash(e);
  }
  return { head: prev, length: entries.length };
}
