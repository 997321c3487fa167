/**
 * Malformed basicConstraints and keyUsage (src/pki/ca-extensions.ts): hand-made bad encodings,
 * every single-byte change of valid ones, and seeded fast-check properties over random bytes,
 * both at the decoder and inside a signed intermediate certificate on a path. The decoder
 * either returns the value whose exact DER is the input or throws CERT_MALFORMED; a path either
 * verifies as before or is refused with a CloisterError, never a TypeError or RangeError.
 *
 * Then CRL extensions (RFC 5280 sections 5.2, 5.3) on a real Intel PCK CRL: each of its
 * extensions marked critical, and byte changes of its extension areas, both as they are (the
 * signature breaks) and re-signed under a test key (so the extension handling itself decides).
 * The CRL either applies as before or is refused with a CloisterError.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isCloisterError, VerificationError } from '@cloister/errors';
import {
  checkCrl,
  parseCertificate,
  parseCrl,
  parseDcapQuote,
  parsePemCertificates,
  trustAnchor,
  verifyChain,
  type IntelCollateralJson,
} from '@cloister/evidence';
import { hasCode, readVector, readVectorText, requireVectors } from '@cloister/testkit';
import {
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  parseBasicConstraints,
  parseKeyUsage,
  type BasicConstraints,
} from '../src/pki/ca-extensions.js';
import { crlInfo } from '../src/pki/cert-cache.js';
import { readDer } from '../src/pki/der.js';
import {
  ALG,
  CA,
  children,
  der,
  hierarchy,
  makeCert,
  makeRoot,
  nodeKey,
  nodeSigner,
  NOW,
  seq,
  tlv,
  type CertOptions,
} from './pki-fixtures.js';

const dir = requireVectors();

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

// CRL extensions on a real CRL.

/** A real PCK Platform CA CRL (cRLNumber, authorityKeyIdentifier, a reasonCode per entry). */
const REAL_CRL = {
  collateral: 'tdx/phala-tdx-v4.collateral.json',
  quote: 'tdx/phala-tdx-v4.quote.bin',
  now: new Date('2025-07-01T00:00:00Z'),
};

/** One TLV of a DER value, located by its absolute offsets in the whole CRL. */
interface Located {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
  readonly content: Uint8Array;
}

/** The TLVs filling `content`, a view into `whole`, with offsets into `whole`. */
function located(whole: Uint8Array, content: Uint8Array): Located[] {
  const base = content.byteOffset - whole.byteOffset;
  const out: Located[] = [];
  for (let off = 0; off < content.length;) {
    const n = readDer(content, off, 'test');
    out.push({ tag: n.tag, start: base + off, end: base + n.end, content: n.content });
    off = n.end;
  }
  return out;
}

/**
 * The parts of a DER CRL (version 2, with entries and extensions) the tests edit: its
 * TBSCertList and fields, the crlExtensions ([0]) and each entry's crlEntryExtensions, as
 * absolute ranges.
 */
function crlLayout(d: Uint8Array) {
  const [tbs] = located(d, readDer(d, 0, 'test').content);
  assert.ok(tbs);
  const fields = located(d, tbs.content);
  // version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates, [0] crlExtensions
  const [revoked, extensions] = fields.slice(5);
  assert.ok(fields.length === 7 && revoked?.tag === 0x30 && extensions?.tag === 0xa0);
  const entries = located(d, revoked.content);
  const entryExtensions = entries.map((e) => {
    const x = located(d, e.content)[2];
    assert.ok(x?.tag === 0x30);
    return x;
  });
  const bytes = (l: Located): Uint8Array => d.subarray(l.start, l.end);
  return {
    tbs,
    fields: fields.map(bytes),
    entries: entries.map(bytes),
    extensions,
    entryExtensions,
  };
}

/** `tbs` (a TBSCertList TLV declaring ECDSA with SHA-256) signed by `key` as a DER CRL. */
function signCrl(tbs: Uint8Array, key: CryptoKey): Uint8Array {
  const sig = nodeSigner(nodeKey(key), 'SHA-256')(tbs);
  return seq(tbs, ALG.ecdsa('SHA-256'), tlv(0x03, Uint8Array.of(0, ...sig)));
}

/** An Extension TLV with `critical` TRUE inserted after its OID. */
function markCritical(ext: Uint8Array): Uint8Array {
  const [oid, ...rest] = children(ext);
  assert.ok(oid !== undefined && rest.length === 1, 'a non-critical extension');
  return seq(oid, Uint8Array.of(0x01, 0x01, 0xff), ...rest);
}

/**
 * The real CRL, checked as it is for a PCK it covers under its real issuer; and copies of its
 * TBSCertList re-signed under a test CA, checked for a leaf they do not list. `short` is the
 * real CRL cut to its first and last entries (Intel's entries are all alike) and re-signed, so
 * edits of it parse quickly.
 */
async function realCrlSetup() {
  const c = JSON.parse(readVectorText(REAL_CRL.collateral)) as IntelCollateralJson;
  const crl = new Uint8Array(Buffer.from(c.pck_crl, 'hex'));
  const [ca] = parsePemCertificates(c.pck_crl_issuer_chain);
  const pckDer = parseDcapQuote(readVector(REAL_CRL.quote)).pckChain.certificates[0];
  assert.ok(ca && pckDer);
  const pck = parseCertificate(pckDer);
  const testCa = await makeRoot('CN=Re-signing CRL issuer, O=Cloister Test');
  const testLeaf = await makeCert(testCa, 'CN=Covered leaf, O=Cloister Test', { serial: '05' });
  const sign = (tbs: Uint8Array): Uint8Array => signCrl(tbs, testCa.keys.privateKey);
  const layout = crlLayout(crl);
  const f = layout.fields;
  const cut = [layout.entries[0], layout.entries.at(-1)] as Uint8Array[];
  const short = sign(seq(...f.slice(0, 5), seq(...cut), f[6] as Uint8Array));
  const shortLayout = crlLayout(short);
  // Edits stay inside the TBSCertList, so its range is the same in every edited copy.
  const { tbs } = shortLayout;
  const resign = (d: Uint8Array): Uint8Array => sign(d.subarray(tbs.start, tbs.end));
  return {
    crl,
    layout,
    short,
    shortLayout,
    sign,
    resign,
    asIs: (d: Uint8Array) => checkCrl(parseCrl(d), ca, pck, REAL_CRL.now, 'real CRL'),
    /** A test-signed CRL, checked under the test CA. */
    signed: (d: Uint8Array) =>
      checkCrl(parseCrl(d), testCa.cert, testLeaf.cert, REAL_CRL.now, 're-signed'),
  };
}

test(
  'a real CRL with one of its own extensions marked critical is unusable',
  { skip: dir === undefined },
  async () => {
    const r = await realCrlSetup();
    await r.asIs(r.crl);
    const f = r.layout.fields;
    await r.signed(r.sign(seq(...f)));
    const exts = children(children(f[6] as Uint8Array)[0] as Uint8Array);
    const [entry, ...entries] = r.layout.entries;
    const [serial, date, entryExts] = children(entry as Uint8Array);
    // cRLNumber and authorityKeyIdentifier, in that order, as Intel writes them.
    assert.equal(exts.length, 2);
    const variants: [string, 'crl' | 'entry', Uint8Array[]][] = [
      ...['2.5.29.20', '2.5.29.35'].map((oid, i): [string, 'crl', Uint8Array[]] => [
        oid,
        'crl',
        [...f.slice(0, 6), tlv(0xa0, seq(...exts.map((e, j) => (j === i ? markCritical(e) : e))))],
      ]),
      [
        '2.5.29.21',
        'entry',
        [
          ...f.slice(0, 5),
          seq(
            seq(
              serial as Uint8Array,
              date as Uint8Array,
              seq(...children(entryExts as Uint8Array).map(markCritical)),
            ),
            ...entries,
          ),
          f[6] as Uint8Array,
        ],
      ],
    ];
    for (const [oid, scope, fields] of variants) {
      await assert.rejects(
        r.signed(r.sign(seq(...fields))),
        (e: unknown) => {
          hasCode('COLLATERAL_CRL_CRITICAL', 'COLLATERAL')(e);
          const d = (e as VerificationError).details ?? {};
          assert.deepEqual([d['extension'], d['scope']], [oid, scope]);
          return true;
        },
        oid,
      );
    }
  },
);

/** Runs `check`: it resolves, or rejects with a CloisterError `allowed` accepts. */
async function outcomeOf(
  check: () => Promise<void>,
  allowed: (e: VerificationError) => boolean,
): Promise<'applied' | 'refused'> {
  try {
    await check();
    return 'applied';
  } catch (e) {
    assert.ok(isCloisterError(e), `not a CloisterError: ${String(e)}`);
    assert.ok(e instanceof VerificationError && allowed(e), `${e.code}: ${e.message}`);
    return 'refused';
  }
}

/** Re-signed, an edit of the extension areas may only break the encoding or mark one critical. */
const extensionRefusal = (e: VerificationError): boolean =>
  e.layer === 'PARSE' || e.code === 'COLLATERAL_CRL_CRITICAL';

/** Every byte of `areas` of `d`, changed by each of `xors` in turn. */
function* byteChanges(d: Uint8Array, areas: readonly Located[], xors: readonly number[]) {
  for (const a of areas) {
    for (let at = a.start; at < a.end; at++) {
      for (const x of xors) {
        const m = new Uint8Array(d);
        m[at] = (m[at] as number) ^ x;
        yield { at, m };
      }
    }
  }
}

test(
  "every byte of a real CRL's extension areas changed: refused as it is, applied as before or refused re-signed",
  { skip: dir === undefined },
  async () => {
    const r = await realCrlSetup();
    // As it is, a changed signed byte never verifies.
    const real = r.layout;
    for (const { at, m } of byteChanges(
      r.crl,
      [real.extensions, real.entryExtensions[0] as Located],
      [0x01],
    )) {
      assert.equal(
        await outcomeOf(
          () => r.asIs(m),
          () => true,
        ),
        'refused',
        `offset ${at}`,
      );
    }
    // Re-signed, the extension handling decides: the CRL applies as before (the same serials
    // revoked) or is refused.
    const revoked = [...crlInfo(r.short, 'short CRL').revoked.keys()];
    const { extensions, entryExtensions } = r.shortLayout;
    const seen = { applied: 0, refused: 0 };
    for (const { at, m } of byteChanges(
      r.short,
      [extensions, ...entryExtensions],
      [0x01, 0x80, 0xff],
    )) {
      const signed = r.resign(m);
      const o = await outcomeOf(() => r.signed(signed), extensionRefusal);
      seen[o]++;
      if (o === 'applied') {
        assert.deepEqual([...crlInfo(signed, 'edited').revoked.keys()], revoked, `offset ${at}`);
      }
    }
    assert.ok(seen.applied > 0 && seen.refused > 0, JSON.stringify(seen));
  },
);

test(
  "property: random edits of a real CRL's extension areas, re-signed, apply as before or are refused",
  { skip: dir === undefined },
  async () => {
    const r = await realCrlSetup();
    const areas = [r.shortLayout.extensions, ...r.shortLayout.entryExtensions];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(areas.length - 1), fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 3,
        }),
        async (edits) => {
          const m = new Uint8Array(r.short);
          for (const [which, at, v] of edits) {
            const a = areas[which] as Located;
            m[a.start + (at % (a.end - a.start))] = v;
          }
          await outcomeOf(() => r.signed(r.resign(m)), extensionRefusal);
        },
      ),
      { numRuns: 500, seed: 0xc41 },
    );
  },
);
