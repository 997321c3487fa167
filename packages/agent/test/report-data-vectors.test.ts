/**
 * The agent's report-data offsets agree with the evidence library's parsers on real evidence
 * (vectors from the shared folder, see its SOURCES.md): the agent's pre-send check looks at the
 * same 64 bytes the verifier binds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseDcapQuote, parseSnpReport } from '@cloister/evidence';
import { MISSING_VECTORS, readVector, requireVectors } from '@cloister/testkit';
import { reportDataOf } from '../src/providers/report-data.js';

const dir = requireVectors();

test(
  'SNP reports: report data at the verifier offset',
  { skip: dir === undefined ? MISSING_VECTORS : false },
  () => {
    const files = readdirSync(join(dir as string, 'snp')).filter((f) => f.endsWith('.report.bin'));
    assert.ok(files.length >= 3);
    for (const f of files) {
      const bytes = readVector(`snp/${f}`);
      const parsed = parseSnpReport(bytes);
      assert.deepEqual(reportDataOf('sev-snp', bytes), parsed.reportData, f);
    }
  },
);

test(
  'SGX and TDX quotes (v3, v4, v5): report data at the verifier offset',
  { skip: dir === undefined ? MISSING_VECTORS : false },
  () => {
    // (gtdx-v4-spr is left out: the library refuses its non-zero trailing bytes, as it must.)
    const cases: ['sgx' | 'tdx', string][] = [
      ['sgx', 'sgx/phala-sgx-v3.quote.bin'],
      ['tdx', 'tdx/gtdx-v5.quote.bin'],
      ['tdx', 'tdx/phala-tdx-v4.quote.bin'],
      ['tdx', 'tdx/phala-tdx-v5-nomatch.quote.bin'],
    ];
    for (const [type, path] of cases) {
      const bytes = readVector(path);
      const q = parseDcapQuote(bytes);
      assert.deepEqual(reportDataOf(type, bytes), q.body.reportData, path);
    }
  },
);
