/**
 * Malformed basicConstraints and keyUsage (src/pki/ca-extensions.ts): hand-made bad encodings,
 * every single-byte change of valid ones, and seeded fast-check properties over random bytes,
 * both at the decoder and inside a signed intermediate certificate on a path. The decoder
 * either returns the value whose exact DER is the input or throws CERT_MALFORMED; a path either
 * verifies as before or is refused with a CloisterError, never a TypeError or RangeError.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError } from '@cloister/errors';
import { trustAnchor, verifyChain } from '@cloister/evidence';
import { hasCode } from '@cloister/testkit';
import {
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  parseBasicConstraints,
  parseKeyUsage,
  type BasicConstraints,
} from '../src/pki/ca-extensions.js';
import { CA, der, hierarchy, makeCert, NOW, type CertOptions } from './pki-fixtures.js';

const bytes = (hex: string): Uint8Array =>
  Uint8Array.from(Buffer.from(hex.replace(/ /g, ''), 'hex'));

/** The DER of a basicConstraints value (the reference for what the decoder may accept). */
function encodeBc(v: BasicConstraints): string {
  const ca = v.ca ? '0101ff' : '';
  let len = '';
  if (v.pathLen !== undefined) {
    let h = v.pathLen.toString(16);
    if (h.length % 2 === 1) h = `0${h}`;
    if (parseInt(h.slice(0, 2), 16) & 0x80) h = `00${h}`;
    len = `02${(h.length / 2).toString(16).padStart(2, '0')}${h}`;
  }
  const body = ca + len;
  return `30${(body.length / 2).toString(16).padStart(2, '0')}${body}`;
}

/** The keyUsage mask of a BIT STRING's value octets (bit 0 is the first octet's top bit). */
function kuMask(octets: Uint8Array): number {
  let m = 0;
  octets.forEach((o, i) => {
    for (let j = 0; j < 8; j++) if (o & (0x80 >> j)) m |= 1 << (i * 8 + j);
  });
  return m;
}

/** Decodes, or returns the error code (which must be CERT_MALFORMED). */
function outcome<T>(decode: () => T): T | 'CERT_MALFORMED' {
  try {
    return decode();
  } catch (e) {
    assert.ok(isCloisterError(e), `not a CloisterError: ${String(e)}`);
    assert.equal(e.code, 'CERT_MALFORMED', e.message);
    return 'CERT_MALFORMED';
  }
}

/** What may come of decoding `b` as basicConstraints: a value whose exact DER is `b`, or refusal. */
function checkBc(b: Uint8Array): void {
  const r = outcome(() => parseBasicConstraints(b, 'bc'));
  if (r !== 'CERT_MALFORMED') assert.equal(encodeBc(r), Buffer.from(b).toString('hex'));
}

/** The same for keyUsage: a BIT STRING of 1 or 2 octets, unused bits zero, some defined bit set. */
function checkKu(b: Uint8Array): void {
  const r = outcome(() => parseKeyUsage(b, 'ku'));
  if (r === 'CERT_MALFORMED') return;
  const unused = b[2] as number;
  assert.ok(b[0] === 0x03 && b[1] === b.length - 2 && (b.length === 4 || b.length === 5));
  assert.ok(unused <= 7 && ((b[b.length - 1] as number) & ((1 << unused) - 1)) === 0);
  assert.equal(r, kuMask(b.subarray(3)));
  assert.ok(r > 0 && r < 1 << 9);
}

test('valid encodings decode, AMD keyUsage with its extra unused bit included', () => {
  assert.deepEqual(parseBasicConstraints(bytes('3000'), 'bc'), { ca: false, pathLen: undefined });
  assert.deepEqual(parseBasicConstraints(bytes('30030101ff'), 'bc'), {
    ca: true,
    pathLen: undefined,
  });
  assert.deepEqual(parseBasicConstraints(bytes('30060101ff020101'), 'bc'), {
    ca: true,
    pathLen: 1,
  });
  assert.deepEqual(parseBasicConstraints(bytes('30070101ff02020080'), 'bc'), {
    ca: true,
    pathLen: 128,
  });
  assert.equal(parseKeyUsage(bytes('03020106'), 'ku'), (1 << 5) | (1 << 6));
  assert.equal(parseKeyUsage(bytes('03020204'), 'ku'), 1 << 5);
  assert.equal(parseKeyUsage(bytes('03020104'), 'ku'), 1 << 5);
  assert.equal(parseKeyUsage(bytes('030206c0'), 'ku'), 0b11);
  assert.equal(parseKeyUsage(bytes('0303070080'), 'ku'), 1 << 8);
});

test('malformed basicConstraints and keyUsage are CERT_MALFORMED', () => {
  const badBc = {
    empty: '',
    'not a SEQUENCE': '3100',
    'trailing byte': '300000',
    truncated: '30030101',
    'indefinite length': '308000',
    'non-minimal length': '30810101ff',
    'cA FALSE written out': '3003010100',
    'cA TRUE as BER 0x01': '3003010101',
    'BOOLEAN of two octets': '30040102ffff',
    'pathLen without cA': '3003020100',
    'negative pathLen': '30060101ff0201ff',
    'non-minimal pathLen': '30070101ff02020001',
    'pathLen too large': '300a0101ff020501ffffffff',
    'pathLen as ENUMERATED': '30060101ff0a0100',
    'pathLen before cA': '3006020100 0101ff',
    'three elements': '30090101ff0201000500',
    'cA twice': '30060101ff0101ff',
  };
  for (const [why, hex] of Object.entries(badBc)) {
    assert.throws(() => parseBasicConstraints(bytes(hex), 'bc'), hasCode('CERT_MALFORMED'), why);
  }
  const badKu = {
    empty: '',
    'not a BIT STRING': '04020106',
    'no octets': '030100',
    'no bit set': '03020000',
    'unused count 8': '03020800',
    'unused bits set': '03020107',
    'three value octets': '0304000000ff',
    'undefined bit 9': '0303000040',
    'trailing byte': '0302010600',
    truncated: '030201',
    'constructed BIT STRING': '230403020106',
  };
  for (const [why, hex] of Object.entries(badKu)) {
    assert.throws(() => parseKeyUsage(bytes(hex), 'ku'), hasCode('CERT_MALFORMED'), why);
  }
});

test('every single-byte change of valid encodings: the exact DER of the value, or CERT_MALFORMED', () => {
  for (const valid of ['3000', '30030101ff', '30060101ff020100', '30070101ff02020080']) {
    const b = bytes(valid);
    for (let i = 0; i < b.length; i++) {
      for (let v = 0; v < 256; v++) {
        const m = new Uint8Array(b);
        m[i] = v;
        checkBc(m);
      }
    }
  }
  for (const valid of ['03020106', '03020104', '030206c0', '0303070080']) {
    const b = bytes(valid);
    for (let i = 0; i < b.length; i++) {
      for (let v = 0; v < 256; v++) {
        const m = new Uint8Array(b);
        m[i] = v;
        checkKu(m);
      }
    }
  }
});

/**
 * A valid encoding as it is, or changed at a few places, cut short or extended: near misses of
 * DER, with enough exact hits that acceptance is exercised too.
 */
const nearMiss = (valid: readonly string[]) =>
  fc
    .tuple(
      fc.constantFrom(...valid.map(bytes)),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 2 }),
      fc.oneof(fc.constant(0), fc.nat(8)),
      fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 3 })),
    )
    .map(([b, edits, cut, tail]) => {
      const m = new Uint8Array(b);
      for (const [at, v] of edits) m[at % m.length] = v;
      return Uint8Array.from([...m.subarray(0, Math.max(0, m.length - cut)), ...tail]);
    });

const BC_VALID = ['3000', '30030101ff', '30060101ff020100', '30060101ff020101'];
const KU_VALID = ['03020106', '03020104', '030206c0'];

test('property: random bytes and near misses decode to their exact DER or CERT_MALFORMED', () => {
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 16 }), nearMiss(BC_VALID)), checkBc), {
    numRuns: 3000,
    seed: 0xbc,
  });
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 16 }), nearMiss(KU_VALID)), checkKu), {
    numRuns: 3000,
    seed: 0x4b,
  });
});

test('property: an intermediate carrying random basicConstraints or keyUsage bytes verifies as before or is refused with a CloisterError', async () => {
  const h = await hierarchy();
  const roots = [trustAnchor('test root', der(h.root.cert))];
  const before = (await verifyChain([h.leaf.cert, h.inter.cert], { roots, now: NOW, label: 't' }))
    .path;
  const seen = { accepted: 0, refused: 0 };
  const run = async (oid: string, value: Uint8Array): Promise<void> => {
    const o: CertOptions = {
      ...CA,
      ...(oid === OID_BASIC_CONSTRAINTS ? { basicConstraints: null } : { keyUsage: null }),
      keys: h.inter.keys,
      extensions: [[oid, value, true]],
    };
    const inter = await makeCert(h.root, h.inter.cert.subject, o);
    let path;
    try {
      path = (await verifyChain([h.leaf.cert, inter.cert], { roots, now: NOW, label: 't' })).path;
    } catch (e) {
      assert.ok(isCloisterError(e), `not a CloisterError: ${String(e)}`);
      assert.ok(
        ['CERT_MALFORMED', 'CHAIN_ISSUER_CONSTRAINT'].includes(e.code),
        `${e.code}: ${e.message}`,
      );
      seen.refused++;
      return;
    }
    seen.accepted++;
    // Accepted: the same path as with the well-formed intermediate, by a value that says CA.
    assert.deepEqual(
      path.map((c) => c.subject),
      before.map((c) => c.subject),
    );
    if (oid === OID_BASIC_CONSTRAINTS) assert.equal(parseBasicConstraints(value, 'bc').ca, true);
    else assert.ok(parseKeyUsage(value, 'ku') & (1 << 5));
  };
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.tuple(
          fc.constant(OID_BASIC_CONSTRAINTS),
          fc.oneof(fc.uint8Array({ maxLength: 12 }), nearMiss(BC_VALID)),
        ),
        fc.tuple(
          fc.constant(OID_KEY_USAGE),
          fc.oneof(fc.uint8Array({ maxLength: 12 }), nearMiss(KU_VALID)),
        ),
      ),
      ([oid, value]) => run(oid, value),
    ),
    { numRuns: 150, seed: 0xca },
  );
  // Both outcomes were exercised.
  assert.ok(seen.accepted > 0 && seen.refused > 0, JSON.stringify(seen));
});
