/**
 * The SEV-SNP vectors and what each must verify to (from the vectors' SOURCES.md), shared by
 * the SNP tests.
 */
import type { SnpProduct, SnpTcb } from '@cloister/evidence';

export interface SnpVector {
  readonly name: string;
  readonly report: string;
  /** Offset of the report inside the file (the Azure HCL report carries it at 0x20). */
  readonly offset?: number;
  readonly cert: string;
  readonly at: string;
  readonly product: SnpProduct;
  readonly version: number;
  readonly vmpl: number;
  readonly policy?: string;
  readonly debug?: boolean;
  readonly platformInfo?: string;
  readonly signingKey: 'vcek' | 'vlek';
  readonly reportedTcb: SnpTcb;
  readonly currentTcb?: SnpTcb;
  readonly firmware?: { major: number; minor: number; build: number };
  readonly cpuid?: { family: number; model: number; stepping: number };
  readonly mitVector?: bigint;
  readonly measurement?: string;
  readonly reportData?: string;
  readonly chipId?: string;
}

const z = (n: number): string => '00'.repeat(n);

export const SNP_VECTORS: readonly SnpVector[] = [
  {
    name: 'gsev-milan-v2',
    report: 'snp/gsev-milan-v2.report.bin',
    cert: 'snp/gsev-milan-v2.vcek.der',
    at: '2025-01-01T00:00:00Z',
    product: 'Milan',
    version: 2,
    vmpl: 0,
    policy: '0xb0000',
    debug: true,
    platformInfo: '0x1',
    signingKey: 'vcek',
    reportedTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    currentTcb: { bootloader: 2, tee: 0, snp: 5, microcode: 68 },
    firmware: { major: 1, minor: 49, build: 3 },
    measurement:
      'b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01',
    reportData: '0102030405' + z(59),
    chipId:
      '3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d',
  },
  {
    name: 'teekit-gcp-milan-v5',
    report: 'snp/teekit-gcp-milan-v5.report.bin',
    cert: 'snp/teekit-gcp-milan-v5.vcek.pem',
    at: '2026-01-01T00:00:00Z',
    product: 'Milan',
    version: 5,
    vmpl: 1,
    policy: '0x30000',
    debug: false,
    platformInfo: '0x25',
    signingKey: 'vcek',
    reportedTcb: { bootloader: 4, tee: 0, snp: 27, microcode: 222 },
    firmware: { major: 1, minor: 55, build: 35 },
    cpuid: { family: 0x19, model: 0x01, stepping: 0x01 },
    mitVector: 0xbn,
    measurement:
      'b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3',
    reportData:
      '32fc4f6c1971cbf91566231f8d6153eeb9d093aa94306cb48d39bcc4861a3d395f149876a37bc91332fe493f46294fd135d5b95d363ae96352b8c45f906079f5',
    chipId:
      '980cf7b61876cb37fd517cd44ce11c72d43c5408e66ab39138370ec59bc195e063254cb501d87d82f0b8b8dc774bcfe28019447711598f007390e4accc405361',
  },
  {
    name: 'teekit-gcp-milan-v5-zero-rd',
    report: 'snp/teekit-gcp-milan-v5-zero-rd.report.bin',
    cert: 'snp/teekit-gcp-milan-v5.vcek.pem',
    at: '2026-01-01T00:00:00Z',
    product: 'Milan',
    version: 5,
    vmpl: 0,
    policy: '0x30000',
    debug: false,
    platformInfo: '0x25',
    signingKey: 'vcek',
    reportedTcb: { bootloader: 4, tee: 0, snp: 27, microcode: 222 },
    cpuid: { family: 0x19, model: 0x01, stepping: 0x01 },
    measurement:
      'b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3',
    reportData: z(64),
  },
  {
    name: 'oak-genoa-v5',
    report: 'snp/oak-genoa-v5.report.bin',
    cert: 'snp/oak-genoa-v5.vcek.der',
    at: '2026-01-01T00:00:00Z',
    product: 'Genoa',
    version: 5,
    vmpl: 0,
    policy: '0x30000',
    debug: false,
    platformInfo: '0x25',
    signingKey: 'vcek',
    reportedTcb: { bootloader: 10, tee: 0, snp: 25, microcode: 84 },
    firmware: { major: 1, minor: 55, build: 43 },
    cpuid: { family: 0x19, model: 0x11, stepping: 0x01 },
    mitVector: 0x1n,
    measurement:
      'c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc',
    reportData: '8100555af0ad8e7525be6dffeed0af83e30bbacbf03b76e175e6894d1ed057ce' + z(32),
    chipId:
      'd2421d976f95ce0ba849b7cc5c789122f1e59c77a037272c137ae4d188bb102adbc7c53d0302bff82a432c94a305dec7a7a270ceb19a10f04a83316c6486968d',
  },
  {
    name: 'oak-turin-v5',
    report: 'snp/oak-turin-v5.report.bin',
    cert: 'snp/oak-turin-v5.vcek.der',
    at: '2026-01-01T00:00:00Z',
    product: 'Turin',
    version: 5,
    vmpl: 0,
    policy: '0x30000',
    debug: false,
    platformInfo: '0x67',
    signingKey: 'vcek',
    reportedTcb: { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 },
    firmware: { major: 1, minor: 55, build: 61 },
    cpuid: { family: 0x1a, model: 0x02, stepping: 0x01 },
    measurement:
      'f924dd18f168df60fbea937f0b086284d51b1b376de872bac43694f61134d57967c318018de7335503023dbb50dee624',
    reportData: 'e0fd0bdb6aa4030a6ddea9073e1fcec5be6c782a2c8075a0825dfb3d9a81b924' + z(32),
    chipId: '3b42092f69c656d3',
  },
  {
    name: 'trustee-milan-vlek-v3',
    report: 'snp/trustee-milan-vlek-v3.report.bin',
    cert: 'snp/trustee-milan-vlek-v3.vlek.der',
    at: '2025-06-01T00:00:00Z',
    product: 'Milan',
    version: 3,
    vmpl: 1,
    policy: '0x30000',
    debug: false,
    platformInfo: '0x27',
    signingKey: 'vlek',
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 217 },
    currentTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 220 },
    firmware: { major: 1, minor: 55, build: 29 },
    cpuid: { family: 0x19, model: 0x01, stepping: 0x01 },
    measurement:
      '8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0',
    reportData:
      '819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca',
    chipId: z(64),
  },
  {
    name: 'azure-hcl-milan-v2',
    report: 'azure-cvm/trustee-az-snp-hcl-report.bin',
    offset: 0x20,
    cert: 'azure-cvm/trustee-az-snp-hcl-report.vcek-chain.pem',
    at: '2026-01-01T00:00:00Z',
    product: 'Milan',
    version: 2,
    vmpl: 0,
    signingKey: 'vcek',
    reportedTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 },
  },
];
