import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { isCloisterError } from '@cloister/errors';
import {
  canonicalJson,
  canonicalJsonBytes,
  manifestHash,
  parseStrictJson,
} from '@cloister/protocol';
import type { Manifest } from '@cloister/protocol';

// RFC 8785 §3.2.2 (input) and §3.2.3 / §3.2.4 (output and its UTF-8 bytes).
const RFC_INPUT = `{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\"\\/",
  "literals": [null, true, false]
}`;
const RFC_OUTPUT_HEX = `7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d`;

test('RFC 8785 §3.2.2-3.2.4: arrays, literals, numbers and string escapes', () => {
  const bytes = canonicalJsonBytes(JSON.parse(RFC_INPUT));
  assert.equal(Buffer.from(bytes).toString('hex'), RFC_OUTPUT_HEX.replace(/\s+/g, ''));
  assert.equal(
    canonicalJson(JSON.parse(RFC_INPUT)),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test('RFC 8785 §3.2.3: property sorting by UTF-16 code units, including non-ASCII keys', () => {
  const input = `{
    "\\u20ac": "Euro Sign",
    "\\r": "Carriage Return",
    "\\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\\ud83d\\ude00": "Emoji: Grinning Face",
    "\\u0080": "Control",
    "\\u00f6": "Latin Small Letter O With Diaeresis"
  }`;
  const values = Object.values(
    JSON.parse(canonicalJson(JSON.parse(input))) as Record<string, string>,
  );
  // Object.values would reorder "1" first (integer-like key); read the order from the text.
  const order = [...canonicalJson(JSON.parse(input)).matchAll(/:"([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(order, [
    'Carriage Return',
    'One',
    'Control',
    'Latin Small Letter O With Diaeresis',
    'Euro Sign',
    'Emoji: Grinning Face',
    'Hebrew Letter Dalet With Dagesh',
  ]);
  assert.equal(values.length, 7);
  assert.ok(
    canonicalJson(JSON.parse(input)).startsWith(
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control"',
    ),
  );
});

test('RFC 8785 Appendix B: number serialisation samples (IEEE 754 bit patterns)', () => {
  const cases: [string, string][] = [
    ['0000000000000000', '0'],
    ['8000000000000000', '0'],
    ['0000000000000001', '5e-324'],
    ['8000000000000001', '-5e-324'],
    ['7fefffffffffffff', '1.7976931348623157e+308'],
    ['ffefffffffffffff', '-1.7976931348623157e+308'],
    ['4340000000000000', '9007199254740992'],
    ['c340000000000000', '-9007199254740992'],
    ['4430000000000000', '295147905179352830000'],
    ['44b52d02c7e14af5', '9.999999999999997e+22'],
    ['44b52d02c7e14af6', '1e+23'],
    ['44b52d02c7e14af7', '1.0000000000000001e+23'],
    ['444b1ae4d6e2ef4e', '999999999999999700000'],
    ['444b1ae4d6e2ef4f', '999999999999999900000'],
    ['444b1ae4d6e2ef50', '1e+21'],
    ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
    ['3eb0c6f7a0b5ed8d', '0.000001'],
    ['41b3de4355555553', '333333333.3333332'],
    ['41b3de4355555554', '333333333.33333325'],
    ['41b3de4355555555', '333333333.3333333'],
    ['41b3de4355555556', '333333333.3333334'],
    ['41b3de4355555557', '333333333.33333343'],
    ['becbf647612f3696', '-0.0000033333333333333333'],
    ['43143ff3c1cb0959', '1424953923781206.2'],
  ];
  for (const [bits, expected] of cases) {
    const n = Buffer.from(bits, 'hex').readDoubleBE(0);
    assert.equal(canonicalJson(n), expected, bits);
  }
  for (const bits of ['7fffffffffffffff', '7ff0000000000000']) {
    const n = Buffer.from(bits, 'hex').readDoubleBE(0);
    assert.throws(
      () => canonicalJson(n),
      (e: unknown) => isCloisterError(e) && e.code === 'MANIFEST_INVALID',
    );
  }
});

test('I-JSON: lone surrogates and non-JSON values are refused', () => {
  const bad = (v: unknown) =>
    assert.throws(
      () => canonicalJson(v),
      (e: unknown) => isCloisterError(e) && e.code === 'MANIFEST_INVALID',
    );
  bad({ a: '\ud800' });
  bad({ ['\udc00']: 1 });
  bad([undefined]);
  bad({ a: new Date(0) });
  bad({ a: () => 1 });
  bad(10n);
  assert.equal(canonicalJson({ a: '\ud83d\ude00' }), '{"a":"😀"}');
});

test('the manifest hash ignores whitespace, key order and number spelling', async () => {
  const a = parseStrictJson(
    '{"version":1,"trustDomain":"x","packages":{},"workloads":{}}',
  ) as Manifest;
  const b = parseStrictJson(
    '{ "workloads" : {}, "packages":{},\n "trustDomain":"x", "version": 1.0 }',
  ) as Manifest;
  const c = parseStrictJson(
    '{"version":1,"trustDomain":"y","packages":{},"workloads":{}}',
  ) as Manifest;
  const expected = createHash('sha256')
    .update('{"packages":{},"trustDomain":"x","version":1,"workloads":{}}')
    .digest('hex');
  assert.equal(await manifestHash(a), expected);
  assert.equal(await manifestHash(b), expected);
  assert.notEqual(await manifestHash(c), expected);
});
