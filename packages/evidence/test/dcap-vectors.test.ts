// Every Intel SGX / TDX vector verifies to what its SOURCES.md entry states, at the stated time;
// it fails as expired after its window, and on the chain with the wrong root pinned.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readVector, readVectorText, requireVectors } from '@cloister/testkit';
import { isCloisterError, VerificationError } from '@cloister/errors';
import {
  fromBase64,
  intelCollateralFromPcs,
  INTEL_SGX_ROOT_CA,
  INTEL_SGX_ROOT_CA_SHA256,
  parseCertificates,
  parseDcapQuote,
  parseIntelCollateral,
  sha256,
  toHex,
  verifyDcapQuote,
  type DcapVerifiedQuote,
  type IntelCollateralJson,
  type TdReportBody,
  type TrustAnchor,
} from '@cloister/evidence';

const dir = requireVectors();
const skip = dir === undefined;

const coll = (p: string): IntelCollateralJson =>
  JSON.parse(readVectorText(p)) as IntelCollateralJson;
const rejectsWith =
  (code: string, layer?: string) =>
  (e: unknown): boolean => {
    assert.ok(isCloisterError(e), `expected a CloisterError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (layer !== undefined) assert.equal((e as VerificationError).layer, layer);
    return true;
  };
/** The go-tdx-guest SPR sample ends with an ASCII trailer its authors appended for testing. */
const SPR_TRAILER = '\nextra bytes(only for testing purpose)\n';
const sprQuote = (): Uint8Array => {
  const q = readVector('tdx/gtdx-v4-spr.quote.bin');
  return q.subarray(0, q.length - SPR_TRAILER.length);
};
const testRoot = (): TrustAnchor => {
  const [c] = parseCertificates(readVector('tdx/intel-qvl-sample-TEST-root-ca.pem'));
  assert.ok(c);
  return { name: 'Intel SGX Root CA (TEST)', certificate: c };
};
const zeros = (n: number): string => '00'.repeat(n);

test(
  'the embedded Intel SGX Root CA is the production root, by fingerprint',
  { skip },
  async () => {
    const der = new Uint8Array(INTEL_SGX_ROOT_CA.certificate.rawData);
    assert.equal(toHex(await sha256(der)), INTEL_SGX_ROOT_CA_SHA256);
    assert.deepEqual(der, readVector('sgx/intel-sgx-root-ca.der'));
  },
);

test(
  'SGX v3 (phala): ConfigurationAndSWHardeningNeeded with its advisories',
  { skip },
  async () => {
    const bytes = readVector('sgx/phala-sgx-v3.quote.bin');
    const q = parseDcapQuote(bytes);
    assert.equal(q.header.version, 3);
    assert.equal(q.header.attestationKeyType, 2);
    assert.equal(q.header.teeType, 'sgx');
    assert.equal(q.header.qeSvn, 10);
    assert.equal(q.header.pceSvn, 15);
    assert.equal(toHex(q.header.qeVendorId), '939a7233f79c4ca9940a0db3957f0607');
    assert.equal(toHex(q.header.userData), '3987622ee6968a54977c8626ef47123500000000');
    assert.equal(q.signedRegion.length, 432);
    assert.equal(q.qeAuthData.length, 32);
    assert.equal(q.pckChain.encoding, 'pem');
    assert.equal(q.pckChain.certificates.length, 3);
    assert.equal(q.length, 4600);

    const r = await verifyDcapQuote(bytes, {
      collateral: coll('sgx/phala-sgx-v3.collateral.json'),
      now: new Date('2025-07-01T00:00:00Z'),
    });
    assert.equal(r.tee, 'sgx');
    assert.equal(r.tcbStatus, 'ConfigurationAndSWHardeningNeeded');
    assert.deepEqual(r.advisoryIds, ['INTEL-SA-00289', 'INTEL-SA-00615']);
    assert.equal(r.tcbDate, '2024-03-13T00:00:00.000Z');
    assert.ok(r.tee === 'sgx');
    const c = r.claims;
    assert.equal(c.mrEnclave, '33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb');
    assert.equal(c.mrSigner, '815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6');
    assert.equal(c.isvProdId, 0);
    assert.equal(c.isvSvn, 0);
    assert.equal(c.attributes, '0500000000000000e700000000000000');
    assert.equal(c.debug, false);
    assert.equal(c.cpuSvn, '0b0b1a18ffff04000000000000000000');
    assert.equal(c.miscSelect, '00000000');
    assert.equal(c.reportData, '48656c6c6f2c20776f726c6421' + zeros(51));
    assert.deepEqual(r.qe, {
      mrEnclave: '96b347a64e5a045e27369c26e6dcda51fd7c850e9b3a3a79e718f43261dee1e4',
      mrSigner: '8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff',
      isvProdId: 1,
      isvSvn: 10,
      tcbStatus: 'UpToDate',
    });
    assert.equal(r.pck.fmspc, '00a067110000');
    assert.equal(r.pck.pceId, '0000');
    assert.equal(r.pck.pceSvn, 13);
    assert.deepEqual(r.pck.tcbComponents, [11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.equal(r.pck.cpuSvn, '0b0b0202ff0100000000000000000000');
    assert.equal(r.pck.ppid, 'd04ec06d4e6d92dc90d0ad3cf5ee2ddf');
    assert.equal(r.pck.sgxType, 'Standard');
    assert.equal(r.pck.ca, 'processor');
    assert.deepEqual(r.collateralWindow, {
      notBefore: new Date('2025-06-19T10:56:11Z'),
      notAfter: new Date('2025-07-19T10:01:18Z'),
    });
  },
);

function checkTdV4(r: DcapVerifiedQuote): void {
  assert.ok(r.tee === 'tdx');
  const c = r.claims;
  assert.equal(c.teeTcbSvn, '06010300000000000000000000000000');
  assert.equal(
    c.mrSeam,
    '5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1',
  );
  assert.equal(c.mrSignerSeam, zeros(48));
  assert.equal(c.seamAttributes, zeros(8));
  assert.equal(c.tdAttributes, '0000001000000000');
  assert.equal(c.debug, false);
  assert.equal(c.xfam, 'e702060000000000');
  assert.equal(
    c.mrTd,
    '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
  );
  assert.equal(c.mrConfigId, zeros(48));
  assert.equal(c.mrOwner, zeros(48));
  assert.equal(c.mrOwnerConfig, zeros(48));
  assert.deepEqual(c.rtmrs, [
    '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
    '0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378',
    'd833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132',
    zeros(48),
  ]);
  assert.equal(
    c.reportData,
    '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20',
  );
  assert.equal(c.teeTcbSvn2, undefined);
}

test(
  'TDX v4 (phala): UpToDate, module TDX_01, 70 zero bytes of padding tolerated',
  { skip },
  async () => {
    const bytes = readVector('tdx/phala-tdx-v4.quote.bin');
    const q = parseDcapQuote(bytes);
    assert.equal(q.header.version, 4);
    assert.equal(q.header.teeType, 'tdx');
    assert.equal(q.body.kind, 'td10');
    assert.equal(q.signedRegion.length, 632);
    assert.equal(q.length, 5006 - 70);
    assert.equal(toHex(q.header.userData), '889b7d6ff9df2405b240a830e73faf3d00000000');
    const r = await verifyDcapQuote(bytes, {
      collateral: coll('tdx/phala-tdx-v4.collateral.json'),
      now: new Date('2025-07-01T00:00:00Z'),
    });
    assert.equal(r.tcbStatus, 'UpToDate');
    assert.deepEqual(r.advisoryIds, []);
    checkTdV4(r);
    assert.ok(r.tee === 'tdx');
    assert.deepEqual(r.tdxModule, { id: 'TDX_01', tcbStatus: 'UpToDate' });
    assert.equal(
      r.qe.mrEnclave,
      'e5a3a7b5d830c2953b98534c6c59a3a34fdc34e933f7f5898f0a85cf08846bca',
    );
    assert.equal(r.qe.mrSigner, 'dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5');
    assert.equal(r.qe.isvProdId, 2);
    assert.equal(r.qe.isvSvn, 6);
    assert.equal(r.pck.fmspc, 'b0c06f000000');
    assert.equal(r.pck.pceSvn, 11);
    assert.deepEqual(r.pck.tcbComponents.slice(0, 8), [3, 3, 2, 2, 4, 1, 0, 5]);
    assert.equal(r.pck.sgxType, 'Scalable');
    assert.equal(r.pck.ca, 'platform');
    assert.deepEqual(r.collateralWindow, {
      notBefore: new Date('2025-06-19T10:32:27Z'),
      notAfter: new Date('2025-07-19T10:00:35Z'),
    });
    // A second (memoised) verification gives the same answer.
    const again = await verifyDcapQuote(bytes, {
      collateral: parseIntelCollateral(coll('tdx/phala-tdx-v4.collateral.json')),
      now: new Date('2025-07-01T00:00:00Z'),
    });
    assert.deepEqual(again, r);
  },
);

test('TDX v5 nomatch (phala): all signatures valid, no TCB level matches', { skip }, async () => {
  const bytes = readVector('tdx/phala-tdx-v5-nomatch.quote.bin');
  const q = parseDcapQuote(bytes);
  assert.equal(q.header.version, 5);
  assert.equal(q.bodyType, 3);
  assert.equal(q.signedRegion.length, 702);
  const b = q.body as TdReportBody;
  assert.equal(toHex(b.teeTcbSvn), '07010300000000000000000000000000');
  assert.equal(toHex(b.teeTcbSvn2 ?? new Uint8Array()), '0d010300000000000000000000000000');
  assert.equal(
    toHex(b.mrTd),
    '273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd',
  );
  assert.equal(toHex(b.mrServiceTd ?? new Uint8Array(1)), zeros(48));
  assert.equal(
    toHex(b.reportData),
    'd2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce47728' + zeros(32),
  );
  await assert.rejects(
    verifyDcapQuote(bytes, {
      collateral: coll('tdx/phala-fmspc90c06f-2026-02.collateral.json'),
      now: new Date('2026-03-01T00:00:00Z'),
    }),
    rejectsWith('TCB_NOT_SUPPORTED', 'TCB'),
  );
  // Without collateral every signature and the chain verify: only the collateral is missing.
  await assert.rejects(
    verifyDcapQuote(bytes, { now: new Date('2026-03-01T00:00:00Z') }),
    rejectsWith('COLLATERAL_MISSING', 'COLLATERAL'),
  );
});

test('TDX v5 (go-tdx-guest) with the 2026-02 collateral: UpToDate', { skip }, async () => {
  const bytes = readVector('tdx/gtdx-v5.quote.bin');
  const q = parseDcapQuote(bytes);
  assert.equal(q.length, 5006);
  const r = await verifyDcapQuote(bytes, {
    collateral: coll('tdx/phala-fmspc90c06f-2026-02.collateral.json'),
    now: new Date('2026-03-01T00:00:00Z'),
  });
  assert.equal(r.tcbStatus, 'UpToDate');
  assert.deepEqual(r.advisoryIds, []);
  assert.equal(r.tcbDate, '2024-11-13T00:00:00.000Z');
  assert.ok(r.tee === 'tdx');
  assert.deepEqual(r.tdxModule, { id: 'TDX_01', tcbStatus: 'UpToDate' });
  assert.equal(r.claims.teeTcbSvn, '0b010400000000000000000000000000');
  assert.equal(r.claims.teeTcbSvn2, '0d010400000000000000000000000000');
  assert.equal(r.claims.mrServiceTd, zeros(48));
  assert.equal(
    r.claims.mrSeam,
    '7bf063280e94fb051f5dd7b1fc59ce9aac42bb961df8d44b709c9b0ff87a7b4df648657ba6d1189589feab1d5a3c9a9d',
  );
  assert.equal(
    r.claims.mrTd,
    '7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876',
  );
  assert.equal(
    r.claims.rtmrs[0],
    '5c8daf76063a71ac8fcef4067564661fc682ed7944c7a5d21dbbced02f61ceff4ba0678c6aef3bdae8cbc614cec24619',
  );
  assert.equal(r.claims.rtmrs[3], zeros(48));
  assert.equal(r.claims.tdAttributes, '0000001000000000');
  assert.equal(r.claims.xfam, 'e702060000000000');
  assert.equal(
    r.claims.reportData,
    '945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a',
  );
  assert.equal(r.pck.fmspc, '90c06f000000');
  assert.equal(r.pck.pceSvn, 13);
  assert.deepEqual(r.pck.tcbComponents.slice(0, 8), [4, 4, 2, 2, 4, 1, 0, 5]);
  assert.equal(r.pck.ppid, '2734b654f553596897eaadfb5667a954');
  assert.equal(r.qe.isvSvn, 7);
  // Without collateral: signatures and chain only, from the PCK notBefore.
  await assert.rejects(
    verifyDcapQuote(bytes, { now: new Date('2026-02-03T01:00:00Z') }),
    rejectsWith('COLLATERAL_MISSING'),
  );
});

test(
  'TDX v4 SPR (go-tdx-guest): non-zero trailer refused; without it TCB_NOT_SUPPORTED',
  { skip },
  async () => {
    const raw = readVector('tdx/gtdx-v4-spr.quote.bin');
    assert.equal(
      new TextDecoder().decode(raw.subarray(raw.length - SPR_TRAILER.length)),
      SPR_TRAILER,
    );
    assert.throws(() => parseDcapQuote(raw), rejectsWith('EVIDENCE_TRAILING_BYTES', 'PARSE'));
    const bytes = sprQuote();
    const q = parseDcapQuote(bytes);
    assert.equal(q.length, bytes.length);
    const b = q.body as TdReportBody;
    assert.equal(toHex(b.teeTcbSvn), '03000400000000000000000000000000');
    assert.equal(toHex(b.tdAttributes), '0000004000000000');
    assert.equal(
      toHex(b.mrTd),
      '6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb',
    );
    const now = new Date('2023-06-28T00:00:00Z');
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: coll('tdx/gtdx-v4-spr.collateral.json'), now }),
      rejectsWith('TCB_NOT_SUPPORTED', 'TCB'),
    );
    // The raw PCS responses convert to the same collateral (exact signed substrings kept).
    const derived = coll('tdx/gtdx-v4-spr.collateral.json');
    const fromPcs = intelCollateralFromPcs({
      tcbInfoBody: readVectorText('tdx/gtdx-tcbinfo-50806f000000.json'),
      tcbInfoIssuerChain: encodeURIComponent(derived.tcb_info_issuer_chain),
      qeIdentityBody: readVectorText('tdx/gtdx-qeidentity-tdqe.json'),
      qeIdentityIssuerChain: derived.qe_identity_issuer_chain,
      pckCrl: readVector('tdx/gtdx-pckcrl-platform.der'),
      pckCrlIssuerChain: derived.pck_crl_issuer_chain,
      rootCaCrl: readVector('tdx/gtdx-rootcrl.der'),
    });
    assert.deepEqual({ ...fromPcs }, { ...derived });
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: fromPcs, now }),
      rejectsWith('TCB_NOT_SUPPORTED'),
    );
    // PCK extension fields asserted by the source.
    await assert.rejects(verifyDcapQuote(bytes, { now }), (e: unknown) => {
      assert.ok(isCloisterError(e) && e.code === 'COLLATERAL_MISSING');
      assert.equal(e.details?.['fmspc'], '50806f000000');
      return true;
    });
  },
);

test('every vector fails as expired after its window', { skip }, async () => {
  const cases: [Uint8Array, string, string][] = [
    [
      readVector('sgx/phala-sgx-v3.quote.bin'),
      'sgx/phala-sgx-v3.collateral.json',
      '2025-07-20T00:00:00Z',
    ],
    [
      readVector('tdx/phala-tdx-v4.quote.bin'),
      'tdx/phala-tdx-v4.collateral.json',
      '2025-07-20T00:00:00Z',
    ],
    [
      readVector('tdx/gtdx-v5.quote.bin'),
      'tdx/phala-fmspc90c06f-2026-02.collateral.json',
      '2026-03-21T00:00:00Z',
    ],
    [
      readVector('tdx/phala-tdx-v5-nomatch.quote.bin'),
      'tdx/phala-fmspc90c06f-2026-02.collateral.json',
      '2026-03-21T00:00:00Z',
    ],
    [sprQuote(), 'tdx/gtdx-v4-spr.collateral.json', '2023-07-09T00:00:00Z'],
  ];
  for (const [bytes, c, t] of cases) {
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: coll(c), now: new Date(t) }),
      rejectsWith('COLLATERAL_EXPIRED', 'COLLATERAL'),
    );
    // Before the window starts it is not valid either.
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: coll(c), now: new Date('2020-01-01T00:00:00Z') }),
      (e: unknown) => {
        assert.ok(
          isCloisterError(e) && ['COLLATERAL_EXPIRED', 'CHAIN_EXPIRED'].includes(e.code),
          String(e),
        );
        return true;
      },
    );
  }
  // Far past the PCK certificates' validity, without collateral: the chain has expired.
  await assert.rejects(
    verifyDcapQuote(sprQuote(), { now: new Date('2053-07-01T01:00:00Z') }),
    rejectsWith('CHAIN_EXPIRED', 'CHAIN'),
  );
});

test(
  'roots are pinned by key: the TEST root refuses real quotes, the production root the synthetic one',
  { skip },
  async () => {
    const roots = [testRoot()];
    await assert.rejects(
      verifyDcapQuote(readVector('sgx/phala-sgx-v3.quote.bin'), {
        collateral: coll('sgx/phala-sgx-v3.collateral.json'),
        now: new Date('2025-07-01T00:00:00Z'),
        roots,
      }),
      rejectsWith('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
    );
    await assert.rejects(
      verifyDcapQuote(readVector('tdx/gtdx-v5.quote.bin'), {
        now: new Date('2026-03-01T00:00:00Z'),
        roots,
      }),
      rejectsWith('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
    );
    const synthetic = readVector('tdx/intel-qvl-sample-tdx.quote.bin');
    const q = parseDcapQuote(synthetic);
    assert.equal(q.pckChain.encoding, 'der');
    assert.equal(q.pckChain.certificates.length, 3);
    const now = new Date('2026-01-01T00:00:00Z');
    await assert.rejects(
      verifyDcapQuote(synthetic, { now }),
      rejectsWith('CHAIN_UNTRUSTED_ROOT', 'CHAIN'),
    );
    // With the test root pinned its signatures, chain and binding verify; only collateral is missing.
    await assert.rejects(verifyDcapQuote(synthetic, { now, roots }), (e: unknown) => {
      assert.ok(isCloisterError(e) && e.code === 'COLLATERAL_MISSING');
      assert.equal(e.details?.['fmspc'], 'ed742af8adf5');
      return true;
    });
  },
);

test('Azure TDX quote: signatures and chain valid, collateral missing', { skip }, async () => {
  const ev = JSON.parse(readVectorText('azure-cvm/trustee-az-tdx.evidence.json')) as {
    td_quote: string;
  };
  const bytes = fromBase64(ev.td_quote, 'td_quote');
  const q = parseDcapQuote(bytes);
  assert.equal(q.header.version, 4);
  assert.equal(
    toHex(q.body.reportData),
    '9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839' + zeros(32),
  );
  await assert.rejects(
    verifyDcapQuote(bytes, { now: new Date('2025-01-01T00:00:00Z') }),
    (e: unknown) => {
      assert.ok(
        e instanceof VerificationError &&
          e.code === 'COLLATERAL_MISSING' &&
          e.layer === 'COLLATERAL',
      );
      assert.equal(e.details?.['fmspc'], '00806f050000');
      assert.equal(e.details?.['signaturesValid'], true);
      return true;
    },
  );
});

test('collateral that does not belong to the quote is refused', { skip }, async () => {
  const now = new Date('2025-07-01T00:00:00Z');
  const sgx = readVector('sgx/phala-sgx-v3.quote.bin');
  const sgxColl = coll('sgx/phala-sgx-v3.collateral.json');
  const tdxColl = coll('tdx/phala-tdx-v4.collateral.json');
  // TDX collateral for an SGX quote.
  await assert.rejects(
    verifyDcapQuote(sgx, { collateral: tdxColl, now }),
    rejectsWith('COLLATERAL_MISMATCH', 'COLLATERAL'),
  );
  // The Platform CA's CRL for a PCK issued by the Processor CA.
  await assert.rejects(
    verifyDcapQuote(sgx, {
      collateral: {
        ...sgxColl,
        pck_crl: tdxColl.pck_crl,
        pck_crl_issuer_chain: tdxColl.pck_crl_issuer_chain,
      },
      now,
    }),
    rejectsWith('COLLATERAL_MISMATCH'),
  );
  // TCB Info of another FMSPC (same TEE type, same CA, all current).
  await assert.rejects(
    verifyDcapQuote(readVector('tdx/phala-tdx-v4.quote.bin'), {
      collateral: coll('tdx/phala-fmspc90c06f-2026-02.collateral.json'),
      now: new Date('2026-03-01T00:00:00Z'),
    }),
    rejectsWith('COLLATERAL_MISMATCH', 'COLLATERAL'),
  );
});

test(
  'edited or re-serialised collateral fails its signature; duplicate members are refused',
  { skip },
  async () => {
    const now = new Date('2025-07-01T00:00:00Z');
    const bytes = readVector('sgx/phala-sgx-v3.quote.bin');
    const c = coll('sgx/phala-sgx-v3.collateral.json');
    const edited = c.tcb_info.replace('"ConfigurationAndSWHardeningNeeded"', '"UpToDate"');
    assert.notEqual(edited, c.tcb_info);
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: { ...c, tcb_info: edited }, now }),
      rejectsWith('COLLATERAL_SIGNATURE_INVALID', 'COLLATERAL'),
    );
    const reserialised = JSON.stringify(JSON.parse(c.qe_identity), null, 1);
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: { ...c, qe_identity: reserialised }, now }),
      rejectsWith('COLLATERAL_SIGNATURE_INVALID'),
    );
    const dup = c.tcb_info.replace('{"id"', '{"fmspc":"00A067110000","id"');
    assert.notEqual(dup, c.tcb_info);
    assert.throws(
      () => parseIntelCollateral({ ...c, tcb_info: dup }),
      rejectsWith('COLLATERAL_MALFORMED', 'COLLATERAL'),
    );
    const badSig =
      c.tcb_info_signature.slice(0, -2) + (c.tcb_info_signature.endsWith('00') ? '01' : '00');
    await assert.rejects(
      verifyDcapQuote(bytes, { collateral: { ...c, tcb_info_signature: badSig }, now }),
      rejectsWith('COLLATERAL_SIGNATURE_INVALID'),
    );
    // The collateral JSON text form parses to the same collateral.
    const r = await verifyDcapQuote(bytes, {
      collateral: parseIntelCollateral(readVectorText('sgx/phala-sgx-v3.collateral.json')),
      now,
    });
    assert.equal(r.tcbStatus, 'ConfigurationAndSWHardeningNeeded');
  },
);

test(
  'issuer chains go through the shared path builder: every carried certificate on the path, Intel profile',
  { skip },
  async () => {
    const now = new Date('2025-07-01T00:00:00Z');
    const bytes = readVector('sgx/phala-sgx-v3.quote.bin');
    const c = coll('sgx/phala-sgx-v3.collateral.json');
    const pemBlocks = (text: string): string[] =>
      text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    const testRootPem = pemBlocks(readVectorText('tdx/intel-qvl-sample-TEST-root-ca.pem'))[0];
    const platformCaPem = pemBlocks(
      coll('tdx/phala-tdx-v4.collateral.json').pck_crl_issuer_chain,
    )[0];
    const amdAskPem = pemBlocks(readVectorText('snp/amd-ask-ark-milan-vcek.pem'))[0];
    assert.ok(testRootPem && platformCaPem && amdAskPem);
    const [tcbSigning] = pemBlocks(c.tcb_info_issuer_chain);
    assert.ok(tcbSigning);
    // A certificate riding along that is not on the path: Intel's own Platform CA, the TEST root.
    for (const extra of [platformCaPem, testRootPem]) {
      await assert.rejects(
        verifyDcapQuote(bytes, {
          collateral: { ...c, qe_identity_issuer_chain: `${c.qe_identity_issuer_chain}\n${extra}` },
          now,
        }),
        rejectsWith('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
      );
    }
    // The TEST root (the production root's name, another key) in place of the root.
    await assert.rejects(
      verifyDcapQuote(bytes, {
        collateral: { ...c, tcb_info_issuer_chain: `${tcbSigning}\n${testRootPem}` },
        now,
      }),
      rejectsWith('CHAIN_SIGNATURE_INVALID', 'CHAIN'),
    );
    // Intel's profile signs every certificate with ecdsa-with-SHA256: an RSA-PSS certificate
    // (AMD's ASK) is refused before any path is built.
    await assert.rejects(
      verifyDcapQuote(bytes, {
        collateral: { ...c, tcb_info_issuer_chain: `${c.tcb_info_issuer_chain}\n${amdAskPem}` },
        now,
      }),
      rejectsWith('CERT_MALFORMED', 'PARSE'),
    );
    // The untouched collateral still verifies.
    await verifyDcapQuote(bytes, { collateral: c, now });
  },
);
