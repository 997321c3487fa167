/**
 * `cloister evidence verify FILE --type sgx|tdx|sev-snp ...`: verifies one piece of TEE evidence
 * offline (collateral and certificates from files, time injectable) and appraises it against
 * reference values, with the fail-closed defaults (no debug, TCB status UpToDate only).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { Option } from 'commander';
import { EXIT_CODES, exitCodeFor, isCloisterError } from '@cloister/errors';
import {
  ACCEPTABLE_TCB_STATUSES,
  appraise,
  EVIDENCE_TYPES,
  fromHex,
  verifyEvidence,
} from '@cloister/evidence';
import type { EvidenceType, IntelTcbStatus, ReferenceValues } from '@cloister/evidence';
import type { CommandContext } from '../main.js';
import { cliError } from '../error-codes.js';
import { printJson } from '../output.js';

async function readInput(path: string, what: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (cause) {
    throw cliError('CLI_FILE_NOT_FOUND', `cannot read ${what} ${path}`, {
      cause,
      details: { path },
    });
  }
}

/** Evidence files may be binary or hex text (whitespace allowed). */
export function decodeEvidenceFile(bytes: Uint8Array): Uint8Array {
  const text = new TextDecoder('latin1').decode(bytes).replace(/\s+/g, '').replace(/^0x/, '');
  if (text.length > 0 && text.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(text)) return fromHex(text);
  return bytes;
}

function parseJsonFile(bytes: Uint8Array, path: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as unknown;
  } catch (cause) {
    throw cliError('CLI_BAD_INPUT', `${path} is not JSON`, { cause, details: { path } });
  }
}

function parseTime(s: string | undefined): Date {
  if (s === undefined) return new Date();
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) throw cliError('CLI_USAGE', `--at: not an ISO time: ${s}`);
  return d;
}

const isAcceptableStatus = (s: unknown): s is IntelTcbStatus =>
  ACCEPTABLE_TCB_STATUSES.includes(s as IntelTcbStatus);

/**
 * Checks the parts of a reference file that decide what is accepted. An `acceptedTcbStatus`
 * string would be matched by substring ("OutOfDateConfigurationNeeded" accepting OutOfDate),
 * and a file that is no object, or names no TEE, would fail inside the appraisal as an
 * internal error or have `--accept-tcb-status` silently ignored.
 */
function checkReference(json: unknown, path: string): ReferenceValues {
  const bad = (field: string, message: string): Error =>
    cliError('CLI_BAD_INPUT', `${path}: ${message}`, { details: { path, field } });
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw bad('', 'reference values must be a JSON object');
  }
  const { tee, acceptedTcbStatus } = json as Record<string, unknown>;
  if (!(EVIDENCE_TYPES as readonly unknown[]).includes(tee)) {
    throw bad('tee', `tee must be one of ${EVIDENCE_TYPES.join(', ')}`);
  }
  if (
    acceptedTcbStatus !== undefined &&
    !(Array.isArray(acceptedTcbStatus) && acceptedTcbStatus.every(isAcceptableStatus))
  ) {
    throw bad('acceptedTcbStatus', 'acceptedTcbStatus must be a list of Intel TCB statuses');
  }
  return json as ReferenceValues;
}

/** `--accept-tcb-status`: a misspelt status would otherwise be a list entry that never matches. */
function parseTcbStatuses(list: string): IntelTcbStatus[] {
  const out = list.split(',').map((s) => s.trim());
  const unknown = out.filter((s) => !isAcceptableStatus(s));
  if (unknown.length > 0) {
    throw cliError(
      'CLI_USAGE',
      `--accept-tcb-status: not an acceptable TCB status: ${unknown.join(', ')}`,
      {
        details: { unknown, allowed: ACCEPTABLE_TCB_STATUSES },
      },
    );
  }
  return out as IntelTcbStatus[];
}

interface VerifyFlags {
  type: EvidenceType;
  collateral?: string;
  cert?: string[];
  at?: string;
  reference?: string;
  allowDebug?: boolean;
  acceptTcbStatus?: string;
  json?: boolean;
}

/** The `--json` document of `evidence verify`, documented in docs/cli.md. */
export interface EvidenceVerifyOutput {
  verdict: 'accepted' | 'rejected' | 'malformed' | 'unsupported';
  type: EvidenceType;
  tcbStatus?: IntelTcbStatus;
  advisoryIds?: readonly string[];
  claims?: unknown;
  ear?: unknown;
  reasons?: { rule: string; expected: unknown; actual: unknown; code: string }[];
  error?: Record<string, unknown>;
}

async function verifyCommand(file: string, flags: VerifyFlags, ctx: CommandContext): Promise<void> {
  const evidence = decodeEvidenceFile(await readInput(file, 'evidence'));
  const collateralBytes =
    flags.collateral === undefined ? undefined : await readInput(flags.collateral, 'collateral');
  const certs = await Promise.all((flags.cert ?? []).map((c) => readInput(c, 'certificate')));
  const now = parseTime(flags.at);
  let reference: ReferenceValues = { tee: flags.type };
  if (flags.reference !== undefined) {
    reference = checkReference(
      parseJsonFile(await readInput(flags.reference, 'reference values'), flags.reference),
      flags.reference,
    );
  }
  if (flags.allowDebug === true) reference = { ...reference, debug: true };
  if (flags.acceptTcbStatus !== undefined && (reference.tee === 'sgx' || reference.tee === 'tdx')) {
    reference = {
      ...reference,
      acceptedTcbStatus: parseTcbStatuses(flags.acceptTcbStatus),
    };
  }

  let out: EvidenceVerifyOutput;
  try {
    const collateral =
      collateralBytes === undefined
        ? undefined
        : (parseJsonFile(collateralBytes, flags.collateral ?? '') as Parameters<
            typeof verifyEvidence
          >[2]['collateral']);
    const v = await verifyEvidence(flags.type, evidence, {
      now,
      certs,
      ...(collateral === undefined ? {} : { collateral }),
    });
    const a = appraise(v, reference);
    out = {
      verdict: a.failures.length === 0 ? 'accepted' : 'rejected',
      type: flags.type,
      ...(v.tcbStatus === undefined
        ? {}
        : { tcbStatus: v.tcbStatus, advisoryIds: v.advisoryIds ?? [] }),
      claims: v.claims,
      ear: a.ear,
      ...(a.failures.length === 0
        ? {}
        : {
            reasons: a.failures.map(({ rule, expected, actual, code }) => ({
              rule,
              expected,
              actual,
              code,
            })),
          }),
    };
    ctx.exitCode = a.failures.length === 0 ? EXIT_CODES.ok : EXIT_CODES.rejected;
  } catch (e) {
    if (!isCloisterError(e)) throw e;
    const code = exitCodeFor(e);
    ctx.exitCode = code;
    out = {
      verdict:
        code === EXIT_CODES.malformed
          ? 'malformed'
          : code === EXIT_CODES.unsupported
            ? 'unsupported'
            : 'rejected',
      type: flags.type,
      error: e.toJSON(),
    };
  }
  if (flags.json === true) {
    printJson(ctx.io, out);
    return;
  }
  ctx.io.out(
    `${out.verdict.toUpperCase()} ${out.type} evidence${out.tcbStatus === undefined ? '' : ` (TCB ${out.tcbStatus}${out.advisoryIds?.length ? `: ${out.advisoryIds.join(', ')}` : ''})`}`,
  );
  for (const r of out.reasons ?? [])
    ctx.io.out(
      `  ${r.code} ${r.rule}: expected ${JSON.stringify(r.expected)}, got ${JSON.stringify(r.actual)}`,
    );
  if (out.error !== undefined) {
    const { code, layer, message } = out.error as { code: string; layer?: string; message: string };
    ctx.io.out(`  ${code}${layer === undefined ? '' : ` [${layer}]`}: ${message}`);
  }
  if (out.claims !== undefined) ctx.io.out(JSON.stringify(out.claims, null, 2));
}

export function registerEvidence(program: Command, ctx: CommandContext): void {
  const evidence = program.command('evidence').description('Verify TEE evidence offline');
  evidence
    .command('verify')
    .description('Verify SGX / TDX quotes and SEV-SNP reports against pinned vendor roots')
    .argument('<file>', 'the evidence, binary or hex')
    .addOption(
      new Option('--type <type>', 'evidence type').choices(EVIDENCE_TYPES).makeOptionMandatory(),
    )
    .option('--collateral <file>', 'Intel collateral (dcap-qvl JSON form)')
    .option(
      '--cert <file>',
      'certificate beside the evidence (VCEK/VLEK, ASK; PEM or DER); repeatable',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--at <iso-time>', 'verification time (default: now)')
    .option('--reference <file>', 'reference values (JSON, manifest package fields)')
    .option('--allow-debug', 'accept a TEE in debug mode')
    .option(
      '--accept-tcb-status <list>',
      'comma-separated Intel TCB statuses to accept (default UpToDate)',
    )
    .option('--json', 'print one JSON document')
    .action((file: string, flags: VerifyFlags) => verifyCommand(file, flags, ctx));
}
