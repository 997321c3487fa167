/**
 * An offline CollateralSource: collateral loaded from files (Intel collateral in the dcap-qvl
 * `QuoteCollateralV3` JSON form; AMD VCEK/VLEK certificates, KDS cert_chain bundles and CRLs as
 * DER or PEM) and served from memory. Nothing is fetched.
 *
 * Entries are keyed by what is inside them, not by what a file name says: Intel collateral by
 * the TCB Info's TEE id and FMSPC and the PCK CRL issuer (Processor or Platform CA); AMD
 * certificates by their productName1, hwID (VCEK) and SPL extensions (AMD spec 57230).
 * So a bundle cannot hand out collateral for a query it does not match.
 */
import { fromHex, toHex } from '../bytes.js';
import { parseIntelCollateral } from '../dcap/collateral.js';
import { evidenceError } from '../error-codes.js';
import { parseCertificates, parseCrl } from '../pki/x509.js';
import { readAmdKeyCert } from '../snp/vcek-cert.js';
import type {
  CollateralSource,
  IntelCollateralJson,
  IntelCollateralQuery,
  SnpCollateral,
  SnpCollateralQuery,
} from './types.js';

/** One AMD entry: a VCEK/VLEK with, optionally, its KDS chain and CRL. */
export interface OfflineSnpEntry {
  /** VCEK or VLEK, DER or PEM. */
  readonly cert: Uint8Array;
  /** ASK/ASVK then ARK: a PEM bundle (KDS cert_chain) or DER certificates. */
  readonly chain?: Uint8Array | readonly Uint8Array[];
  /** The KDS CRL (DER). */
  readonly crl?: Uint8Array;
}

export interface OfflineBundle {
  /** dcap-qvl collateral JSON documents (text or parsed objects). */
  readonly intel?: readonly (IntelCollateralJson | string)[];
  readonly snp?: readonly OfflineSnpEntry[];
}

function intelKey(tee: string, fmspc: string, ca: string): string {
  return `${tee}:${fmspc.toLowerCase()}:${ca}`;
}

function tcbKey(t: SnpCollateralQuery['reportedTcb']): string {
  return `${t.bootloader}.${t.tee}.${t.snp}.${t.microcode}.${t.fmc ?? '-'}`;
}

function snpKey(
  product: string,
  kind: 'vcek' | 'vlek',
  hwid: string | undefined,
  tcb: SnpCollateralQuery['reportedTcb'],
): string {
  // A VLEK is not bound to a chip: its key is the product and the TCB only.
  return `${product}:${kind}:${kind === 'vcek' ? (hwid ?? '') : '*'}:${tcbKey(tcb)}`;
}

/** The hwID a KDS lookup uses: 64 bytes, or the first 8 bytes on Turin. */
export function normaliseHwid(product: SnpCollateralQuery['product'], hwid: string): string {
  const h = hwid.toLowerCase();
  if (!/^[0-9a-f]*$/.test(h) || (h.length !== 128 && h.length !== 16)) {
    throw evidenceError(
      'EVIDENCE_BAD_FIELD',
      'SNP collateral query: hwid is not 8 or 64 bytes of hex',
      {
        details: { field: 'hwid', length: h.length },
      },
    );
  }
  return product === 'Turin' ? h.slice(0, 16) : h;
}

function caOfCrl(crlHex: string): 'processor' | 'platform' {
  const crl = parseCrl(fromHex(crlHex, 'pck_crl'), 'pck_crl');
  if (/PCK Processor CA/.test(crl.issuer)) return 'processor';
  if (/PCK Platform CA/.test(crl.issuer)) return 'platform';
  throw evidenceError('COLLATERAL_MALFORMED', 'PCK CRL is issued by neither PCK CA', {
    details: { issuer: crl.issuer },
  });
}

function chainDers(chain: OfflineSnpEntry['chain']): Uint8Array[] {
  if (chain === undefined) return [];
  if (chain instanceof Uint8Array) {
    return parseCertificates(chain, 'SNP chain').map((c) => new Uint8Array(c.rawData));
  }
  return chain.map((d) => new Uint8Array(d));
}

/**
 * Builds a CollateralSource over in-memory collateral. Throws COLLATERAL_MALFORMED /
 * CERT_MALFORMED while loading when an entry cannot be parsed; lookups that match nothing throw
 * COLLATERAL_MISSING.
 */
export function offlineCollateral(bundle: OfflineBundle): CollateralSource {
  const intel = new Map<string, IntelCollateralJson>();
  for (const doc of bundle.intel ?? []) {
    const parsed = parseIntelCollateral(doc);
    const json: IntelCollateralJson =
      typeof doc === 'string' ? (JSON.parse(doc) as IntelCollateralJson) : doc;
    const tee = parsed.tcbInfo.id === 'TDX' ? 'tdx' : 'sgx';
    intel.set(intelKey(tee, parsed.tcbInfo.fmspc, caOfCrl(json.pck_crl)), {
      pck_crl_issuer_chain: json.pck_crl_issuer_chain,
      root_ca_crl: json.root_ca_crl,
      pck_crl: json.pck_crl,
      tcb_info_issuer_chain: json.tcb_info_issuer_chain,
      tcb_info: json.tcb_info,
      tcb_info_signature: json.tcb_info_signature,
      qe_identity_issuer_chain: json.qe_identity_issuer_chain,
      qe_identity: json.qe_identity,
      qe_identity_signature: json.qe_identity_signature,
    });
  }

  const snp = new Map<string, SnpCollateral>();
  for (const e of bundle.snp ?? []) {
    const [leaf] = parseCertificates(e.cert, 'SNP endorsement key certificate');
    if (leaf === undefined) throw evidenceError('CERT_MALFORMED', 'SNP entry without certificate');
    const info = readAmdKeyCert(leaf);
    const hwid = info.hwId === undefined ? undefined : toHex(info.hwId);
    const chain = chainDers(e.chain);
    snp.set(snpKey(info.product, info.kind, hwid, info.spl), {
      endorsementKeyCert: new Uint8Array(leaf.rawData),
      ...(chain.length > 0 ? { chain } : {}),
      ...(e.crl === undefined ? {} : { crl: new Uint8Array(e.crl) }),
    });
  }

  return {
    intel(query: IntelCollateralQuery): Promise<IntelCollateralJson> {
      const hit = intel.get(intelKey(query.tee, query.fmspc, query.ca));
      if (hit === undefined) {
        return Promise.reject(
          evidenceError('COLLATERAL_MISSING', 'no offline Intel collateral for this platform', {
            details: { tee: query.tee, fmspc: query.fmspc, ca: query.ca },
          }),
        );
      }
      return Promise.resolve(hit);
    },
    snp(query: SnpCollateralQuery): Promise<SnpCollateral> {
      try {
        const hwid =
          query.signingKey === 'vcek' ? normaliseHwid(query.product, query.hwid) : undefined;
        const hit = snp.get(snpKey(query.product, query.signingKey, hwid, query.reportedTcb));
        if (hit === undefined) {
          throw evidenceError(
            'COLLATERAL_MISSING',
            'no offline AMD collateral for this chip and TCB',
            {
              details: {
                product: query.product,
                signingKey: query.signingKey,
                reportedTcb: query.reportedTcb,
              },
            },
          );
        }
        return Promise.resolve(hit);
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    },
  };
}
