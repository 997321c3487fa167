/**
 * AMD VCEK / VLEK certificate extensions: AMD spec 57230 ("Versioned Chip Endorsement Key (VCEK)
 * Certificate and KDS Interface Specification"), the VCEK/VLEK certificate extensions
 * (OIDs 1.3.6.1.4.1.3704.1.x; cspID on VLEKs only). The X.509 extension value of each is a DER value:
 * INTEGER for the SPLs and structVersion, IA5String for productName1 and cspID, and for hwID the
 * raw 64 (Turin: 8) bytes, which older certificates store without an OCTET STRING tag.
 */
import * as asn1js from 'asn1js';
import type { SnpProduct } from '../claims.js';
import type { Certificate } from '../pki/x509.js';
import { evidenceError } from '../error-codes.js';

const ARC = '1.3.6.1.4.1.3704.1';
export const AMD_OID = {
  structVersion: `${ARC}.1`,
  productName1: `${ARC}.2`,
  blSPL: `${ARC}.3.1`,
  teeSPL: `${ARC}.3.2`,
  snpSPL: `${ARC}.3.3`,
  ucodeSPL: `${ARC}.3.8`,
  fmcSPL: `${ARC}.3.9`,
  hwID: `${ARC}.4`,
  cspID: `${ARC}.5`,
} as const;

/** What an AMD endorsement key certificate says about the chip and TCB it was issued for. */
export interface AmdKeyCertInfo {
  readonly kind: 'vcek' | 'vlek';
  /** The product family ("Milan" from "Milan-B0"). */
  readonly product: SnpProduct;
  /** productName1 as written ("Milan-B0", "Genoa", "Turin"). */
  readonly productName: string;
  readonly structVersion: number | undefined;
  /** VCEK only: 64 bytes (Turin: 8). */
  readonly hwId: Uint8Array | undefined;
  /** VLEK only: the cloud provider the VLEK was issued to. */
  readonly cspId: string | undefined;
  readonly spl: {
    readonly bootloader: number;
    readonly tee: number;
    readonly snp: number;
    readonly microcode: number;
    readonly fmc?: number;
  };
}

function badExt(message: string, details: Record<string, unknown>): never {
  throw evidenceError('CHAIN_BAD_EXTENSION', message, { details });
}

function extValue(cert: Certificate, oid: string): Uint8Array | undefined {
  const ext = cert.getExtension(oid);
  return ext === null ? undefined : new Uint8Array(ext.value);
}

function decodeDer(value: Uint8Array, oid: string): asn1js.AsnType {
  const parsed = asn1js.fromBER(value);
  if (parsed.offset === -1 || parsed.offset !== value.length) {
    badExt(`AMD certificate extension ${oid} is not one DER value`, { oid });
  }
  return parsed.result;
}

function intExt(cert: Certificate, oid: string, name: string): number | undefined {
  const v = extValue(cert, oid);
  if (v === undefined) return undefined;
  const d = decodeDer(v, oid);
  if (!(d instanceof asn1js.Integer)) badExt(`AMD extension ${name} is not an INTEGER`, { oid });
  const n = d.valueBlock.valueDec;
  // SPLs are bytes; reject anything else rather than truncate (a 0x1FF SPL must not pass as 0xFF).
  if (!Number.isSafeInteger(n) || n < 0 || n > 255 || d.valueBlock.isHexOnly) {
    badExt(`AMD extension ${name} is out of range`, { oid, name });
  }
  return n;
}

function stringExt(cert: Certificate, oid: string, name: string): string | undefined {
  const v = extValue(cert, oid);
  if (v === undefined) return undefined;
  const d = decodeDer(v, oid);
  if (!(d instanceof asn1js.IA5String) && !(d instanceof asn1js.Utf8String)) {
    badExt(`AMD extension ${name} is not a string`, { oid });
  }
  return d.getValue();
}

/**
 * hwID: KDS writes the raw chip ID as the extension value; some tools wrap it in an OCTET
 * STRING. Accept exactly those two shapes, with the expected length.
 */
function hwIdExt(cert: Certificate, expectedLen: number): Uint8Array | undefined {
  const v = extValue(cert, AMD_OID.hwID);
  if (v === undefined) return undefined;
  if (v.length === expectedLen) return v;
  if (v.length === expectedLen + 2 && v[0] === 0x04 && v[1] === expectedLen) return v.subarray(2);
  return badExt('AMD extension hwID has the wrong length', {
    oid: AMD_OID.hwID,
    length: v.length,
    expected: expectedLen,
  });
}

/** The product family named by productName1 ("Milan-B0" -> "Milan"). */
export function productFromName(name: string): SnpProduct | undefined {
  const family = name.split('-')[0];
  return family === 'Milan' || family === 'Genoa' || family === 'Turin' ? family : undefined;
}

function commonName(cert: Certificate): string | undefined {
  const cn = cert.subjectName.getField('CN');
  return cn.length === 1 ? cn[0] : undefined;
}

/**
 * Reads the AMD extensions of a VCEK or VLEK. The key type comes from the subject CN
 * ("SEV-VCEK" / "SEV-VLEK"); a VCEK must carry hwID, a VLEK must carry cspID. Throws
 * CHAIN_BAD_EXTENSION when the certificate is not an AMD endorsement key certificate.
 */
export function readAmdKeyCert(cert: Certificate): AmdKeyCertInfo {
  const cn = commonName(cert);
  const kind = cn === 'SEV-VCEK' ? 'vcek' : cn === 'SEV-VLEK' ? 'vlek' : undefined;
  if (kind === undefined) {
    badExt('certificate is neither a VCEK (CN SEV-VCEK) nor a VLEK (CN SEV-VLEK)', {
      subject: cert.subject,
    });
  }
  const productName = stringExt(cert, AMD_OID.productName1, 'productName1');
  if (productName === undefined) badExt('AMD extension productName1 is missing', { kind });
  const product = productFromName(productName);
  if (product === undefined) badExt('productName1 names an unknown product', { productName });

  const spl = (oid: string, name: string): number => {
    const n = intExt(cert, oid, name);
    if (n === undefined) badExt(`AMD extension ${name} is missing`, { oid, name });
    return n;
  };
  const bootloader = spl(AMD_OID.blSPL, 'blSPL');
  const tee = spl(AMD_OID.teeSPL, 'teeSPL');
  const snp = spl(AMD_OID.snpSPL, 'snpSPL');
  const microcode = spl(AMD_OID.ucodeSPL, 'ucodeSPL');
  const fmc = product === 'Turin' ? spl(AMD_OID.fmcSPL, 'fmcSPL') : undefined;

  const hwId = hwIdExt(cert, product === 'Turin' ? 8 : 64);
  const cspId = stringExt(cert, AMD_OID.cspID, 'cspID');
  if (kind === 'vcek' && hwId === undefined) badExt('VCEK has no hwID extension', { kind });
  if (kind === 'vlek' && cspId === undefined) badExt('VLEK has no cspID extension', { kind });

  return {
    kind,
    product,
    productName,
    structVersion: intExt(cert, AMD_OID.structVersion, 'structVersion'),
    hwId,
    cspId,
    spl: { bootloader, tee, snp, microcode, ...(fmc === undefined ? {} : { fmc }) },
  };
}
